#!/bin/sh
# The fleet simulator's recorded runs (bench/fleet.py matrix), then the work-vs-data figure.
#   bench/fleet_runs.sh                 # every run of bench/fleet.py's MATRIX
#   bench/fleet_runs.sh --only 1,2      # some of them
#   bench/fleet_runs.sh --tag pre-      # labels prefixed (var/fleet-results/pre-*.json)
# Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust) and Redis on 127.0.0.1:6379.
# Results: var/fleet-results/<label>.json, tables on stdout, docs/images/work-vs-data.svg.
set -eu
cd "$(dirname "$0")/.."
echo "start $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)"
.venv/bin/python bench/fleet.py matrix "$@"
.venv/bin/python bench/curve.py
echo "end $(date -u +%FT%TZ)"
