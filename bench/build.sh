#!/usr/bin/env bash
# bench/build.sh — noodle's builds vs Nix 2.8 (nix-build), side by side, same run.
#
#   (a) noop    sandbox overhead: one no-op build end to end, nothing cached, >= 20 runs, alternating
#               noodle | nix-build (sandbox off) | nix-build (sandbox on) | nix-build (sandbox on,
#               private store)
#   (b) locked  `noodle build --locked` of a fully built 100-package channel (no builds; target
#               < 100 ms) | nix-build of the same graph as 100 built derivations
#
# Usage (as root, from anywhere):
#   cargo build --release               # the noodle side needs target/release/noodle (or NOODLE=…)
#   bench/build.sh                      # both, 21 runs of (a), 30 of (b): about a minute
#   bench/build.sh --ops noop --runs 25 --keep
#   bench/build.sh --no-noodle          # Nix only (automatic while `noodle build` does not exist)
# Details: bench/build_bench.py --help. Results: bench/out/build-results.md (+ build-raw.tsv, logs/).
set -euo pipefail
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
for c in nix-build nix-store python3 /bin/busybox; do
  command -v "$c" >/dev/null || { echo "build.sh: missing $c" >&2; exit 1; }
done
[[ $(id -u) == 0 ]] || { echo "build.sh: run as root (Nix single-user, sandboxed builds)" >&2; exit 1; }
exec python3 "$BENCH/build_bench.py" "$@"
