#!/usr/bin/env bash
# Profile edgemeta under the throughput load of `make bench` (py-spy + strace).
# Writes bench/results/profile.{txt,svg,json}; extra arguments go to bench.profile
# (e.g. --seconds 20). Needs `make bench` (or pip install -e '.[bench]') first.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m bench.profile "$@"
