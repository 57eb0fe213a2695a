#!/usr/bin/env bash
# The demo on the embedded default: SQLite + django-q2, a real agent, all on this machine.
# Called by `make demo` after the virtualenv is installed. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBUG=true
export PORTAL_AGENT_POLL_SECONDS="${PORTAL_AGENT_POLL_SECONDS:-5}"
# The demo's accounts have no authenticator, so approving would first ask each to set one up:
# off unless asked for (PORTAL_MFA_FOR_APPROVALS=true make demo shows the MFA pages; README).
export PORTAL_MFA_FOR_APPROVALS="${PORTAL_MFA_FOR_APPROVALS:-false}"
PY=.venv/bin/python
AGENT=.venv/bin/backup-agent
URL=http://127.0.0.1:8000
AGENT_CONFIG=var/agent/config.json
mkdir -p var/log var/agent

$PY manage.py migrate --noinput
$PY manage.py seed_demo | tee var/log/seed.txt
$PY manage.py sync_schedules

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

$PY manage.py runserver 127.0.0.1:8000 --noreload >var/log/web.log 2>&1 & pids+=($!)
$PY manage.py qcluster >var/log/worker.log 2>&1 & pids+=($!)

for _ in $(seq 1 60); do
  $PY scripts/wait_http.py "$URL/healthz" 2>/dev/null && break
  sleep 0.5
done
$PY scripts/wait_http.py "$URL/healthz" || { echo "the web server did not start; see var/log/web.log"; exit 1; }

# Enrol (again) the local agent: each run issues a fresh one-time token.
TOKEN=$($PY manage.py demo_agent --prepare)
# The server's own allow-list: the demo folder, its storage, and var/restores for restores.
mapfile -t ALLOW < <($PY manage.py demo_agent --allow-flags)
mkdir -p var/restores
$AGENT enrol --server "$URL" --token "$TOKEN" --hostname demo-agent.local \
  --config "$AGENT_CONFIG" --spool-dir var/agent/spool --force "${ALLOW[@]}"
$PY manage.py demo_agent --backup-now
$AGENT run --config "$AGENT_CONFIG" >var/log/agent.log 2>&1 & pids+=($!)

cat <<MSG

  Backup Portal is running at $URL/  (admin: $URL/admin/)
  Logins are printed above by seed_demo. Logs: var/log/{web,worker,agent}.log
  The demo agent backs up var/demo-data/webshop into var/storage every 5 minutes;
  its allow-list (backup-agent policy --config var/agent/config.json) lets it
  restore into var/restores and nowhere else.
  Ctrl-C stops the web server, the worker and the agent.

MSG
wait
