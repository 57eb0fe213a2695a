"""The embedded set-up writes to one SQLite file from the web server, the worker and agent reports.

These tests open a real database file with exactly the DATABASES entry that
``portal/settings.py`` builds for a SQLite URL, whatever database the rest of
the suite runs on, and hammer it from several threads the way concurrent
requests do: read a row, then write based on it, inside ``atomic()``.
"""

from __future__ import annotations

import runpy
import threading
from pathlib import Path

import pytest
from django.db import connections, transaction

REPO = Path(__file__).resolve().parents[2]
ALIAS = "sqlite_concurrency"
THREADS = 8
TRANSACTIONS_PER_THREAD = 40


def sqlite_settings_for(path: Path, monkeypatch) -> dict:
    """DATABASES['default'] as portal/settings.py builds it for ``sqlite:///<path>``."""
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{path}")
    monkeypatch.setenv("DEBUG", "true")  # the database part does not depend on DEBUG
    monkeypatch.delenv("SQLITE_BUSY_TIMEOUT", raising=False)
    namespace = runpy.run_path(str(REPO / "portal" / "settings.py"))
    return namespace["DATABASES"]["default"]


@pytest.fixture
def sqlite_file(tmp_path, monkeypatch, django_db_blocker):
    """A database alias on a fresh SQLite file, registered for this test only."""
    config = sqlite_settings_for(tmp_path / "portal.sqlite3", monkeypatch)
    assert config["ENGINE"] == "django.db.backends.sqlite3"
    connections.settings[ALIAS] = connections.configure_settings({"default": config})["default"]
    try:
        with django_db_blocker.unblock():
            with connections[ALIAS].cursor() as cursor:
                cursor.execute("CREATE TABLE counter (id INTEGER PRIMARY KEY, value INTEGER NOT NULL)")
                cursor.execute("INSERT INTO counter (id, value) VALUES (1, 0)")
                cursor.execute("CREATE TABLE ledger (worker INTEGER, seq INTEGER, seen INTEGER NOT NULL)")
            yield connections[ALIAS]
    finally:
        connections[ALIAS].close()
        del connections[ALIAS]
        del connections.settings[ALIAS]


def pragma(connection, name: str):
    with connection.cursor() as cursor:
        cursor.execute(f"PRAGMA {name}")
        return cursor.fetchone()[0]


def test_sqlite_file_runs_in_wal_mode_with_a_busy_timeout(sqlite_file):
    assert pragma(sqlite_file, "journal_mode") == "wal"
    assert pragma(sqlite_file, "busy_timeout") >= 1000  # milliseconds: waits rather than fails
    assert pragma(sqlite_file, "foreign_keys") == 1


def test_concurrent_read_then_write_transactions_never_hit_database_is_locked(sqlite_file):
    """With deferred transactions, two readers that both try to write deadlock and SQLite
    fails one at once with "database is locked" (the busy timeout does not help); the
    IMMEDIATE transaction mode takes the write lock at BEGIN so they queue instead."""
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def worker(number: int) -> None:
        try:
            start.wait()
            for seq in range(TRANSACTIONS_PER_THREAD):
                with transaction.atomic(using=ALIAS), connections[ALIAS].cursor() as cursor:
                    cursor.execute("SELECT value FROM counter WHERE id = 1")
                    (seen,) = cursor.fetchone()
                    cursor.execute("UPDATE counter SET value = %s WHERE id = 1", [seen + 1])
                    cursor.execute(
                        "INSERT INTO ledger (worker, seq, seen) VALUES (%s, %s, %s)", [number, seq, seen]
                    )
        except BaseException as exc:  # collected and asserted in the main thread
            errors.append(exc)
        finally:
            connections[ALIAS].close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    total = THREADS * TRANSACTIONS_PER_THREAD
    with sqlite_file.cursor() as cursor:
        cursor.execute("SELECT value FROM counter WHERE id = 1")
        assert cursor.fetchone()[0] == total  # no lost update
        cursor.execute("SELECT COUNT(*), COUNT(DISTINCT seen) FROM ledger")
        # Every write landed, and each transaction saw the one before it: they were serialised.
        assert cursor.fetchone() == (total, total)
