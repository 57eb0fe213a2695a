"""Fail loudly when the PostgreSQL the suite needs is not reachable: never skip silently."""

import sys

import psycopg2

url = sys.argv[1]
try:
    psycopg2.connect(url, connect_timeout=5).close()
except psycopg2.OperationalError as exc:
    sys.exit(
        f"error: PostgreSQL is not reachable at {url}: {exc}\n"
        "The test suite runs on PostgreSQL as well as SQLite; start the server "
        "(pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start) and try again."
    )
print(f"PostgreSQL reachable at {url}")
