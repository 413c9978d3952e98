#!/usr/bin/env bash
# bench/activation.sh — what a health-gated activation costs beyond its checks, and how fast a red
# check brings the previous generation back (the issue's targets: < 20 ms, < 50 ms).
#
# Usage (as root):
#   cargo build --release          # needs target/release/noodle (or NOODLE=…)
#   bench/activation.sh            # 30 rounds of each figure (~2 minutes)
#   bench/activation.sh --runs 50 --big   # + two generations of 1,000 packages
# Details: bench/activation_bench.py --help. Results: bench/out/activation-results.md
# (+ activation-raw.tsv, logs/activation-*.log).
set -euo pipefail
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[[ $(id -u) == 0 ]] || { echo "activation.sh: run as root" >&2; exit 1; }
exec python3 "$BENCH/activation_bench.py" "$@"
