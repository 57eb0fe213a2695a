# Two commands for a fresh machine:  make demo   and   make test
# Everything else here is what those two need.

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
DEMO_ENV := DEBUG=true
PG_URL ?= postgres://postgres@127.0.0.1:5432

.PHONY: demo test install chromium slapd prometheus agent-tools agent-dist build-deps test-sqlite test-postgres lint clean

# python-ldap (LDAP / Active Directory sign-in) compiles against OpenLDAP's and SASL's headers.
build-deps:
	@dpkg -s libldap2-dev libsasl2-dev >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libldap2-dev libsasl2-dev >/dev/null; }
	@dpkg -s libldap2-dev libsasl2-dev >/dev/null 2>&1 || { echo "error: libldap2-dev could not be installed"; exit 1; }

# The LDAP tests start their own OpenLDAP server (Debian's slapd) on a free loopback port.
slapd:
	@command -v /usr/sbin/slapd >/dev/null || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slapd ldap-utils >/dev/null; }
	@command -v /usr/sbin/slapd >/dev/null || { echo "error: slapd could not be installed"; exit 1; }

# The monitoring tests run promtool on deploy/prometheus/alerts.yml and start their own Prometheus
# (Debian's) on a free loopback port; the package's own service on :9090 is not used.
prometheus:
	@command -v /usr/bin/prometheus >/dev/null && command -v /usr/bin/promtool >/dev/null || { \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		prometheus >/dev/null; }
	@command -v /usr/bin/promtool >/dev/null || { echo "error: prometheus could not be installed"; exit 1; }

# The agent's packages (tests/agent_dist): Debian's dpkg-deb builds the .deb, shellcheck checks
# the portal's install.sh, fakeroot for dpkg-buildpackage-style builds by hand.
agent-tools:
	@command -v dpkg-deb >/dev/null && command -v shellcheck >/dev/null && command -v fakeroot >/dev/null || { \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dpkg-dev fakeroot shellcheck \
		>/dev/null; }
	@command -v shellcheck >/dev/null || { echo "error: shellcheck could not be installed"; exit 1; }
	@command -v dpkg-deb >/dev/null || { echo "error: dpkg-deb could not be installed"; exit 1; }

## agent-dist: the agent's wheel, zipapp (+ .sha256) and .deb in dist/agent/ (scripts/build_agent.py)
agent-dist: agent-tools
	$(PYTHON) scripts/build_agent.py --out dist/agent

# Exact, hashed versions from the lock file; the project itself on top, without resolving again.
$(VENV)/.installed: pyproject.toml requirements/dev.lock
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	@$(MAKE) --no-print-directory build-deps
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet --require-hashes -r requirements/dev.lock
	$(PIP) install --quiet --no-deps -e .
	touch $@

install: $(VENV)/.installed

# The browser tests drive Debian's chromium (Playwright's own browser download is not used).
chromium:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }
	@command -v chromium >/dev/null || { echo "error: chromium could not be installed"; exit 1; }

## demo: set up and run the portal with demo data on SQLite + django-q2 at http://127.0.0.1:8000
demo: install
	@bash scripts/demo.sh

## test: lint, then the whole suite on SQLite and on PostgreSQL
test: install chromium slapd prometheus agent-tools lint test-sqlite test-postgres

lint:
	$(PY) -m ruff check .
	$(DEMO_ENV) $(PY) manage.py makemigrations --check --dry-run

test-sqlite:
	@echo "== test suite on SQLite =="
	DATABASE_URL=sqlite:///var/test.sqlite3 $(PY) -m pytest -q

test-postgres:
	@echo "== test suite on PostgreSQL =="
	@$(PY) scripts/require_postgres.py "$(PG_URL)/postgres"
	DATABASE_URL=$(PG_URL)/bp_ci_$$$$ $(PY) -m pytest -q --create-db

## bench-poll: the idle agent poll beside a bare Django JSON view (bench/poll.py; PostgreSQL, wrk)
.PHONY: bench-poll
bench-poll: install
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
	@command -v wrk >/dev/null || { echo "error: wrk could not be installed"; exit 1; }
	@$(PY) scripts/require_postgres.py "$(PG_URL)/postgres"
	$(PY) bench/poll.py --database-url $(PG_URL)/bp_poll_bench

clean:
	rm -rf $(VENV) var/*.sqlite3*
