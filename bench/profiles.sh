#!/usr/bin/env bash
# bench/profiles.sh — noodle's profiles and generations vs nix-env (Nix 2.8), side by side, same run.
#
#   install   the generation of an empty profile holding 1,000 packages × 20 files (fresh stores
#             every round): `noodle install` | `nix-env -i` (private chroot store; and a private
#             store without sandbox) | `cp -a` of the merged tree (physical floor)
#   switch    `profile switch N` | `nix-env --switch-generation N`, 1,000 generations
#   rollback  `profile rollback` | `nix-env --rollback`, 1,000 generations
#   list      `profile generations` | `nix-env --list-generations`, 1,000 generations
#   diff      `profile diff 1 3` of two 1,000-package generations | `nix store diff-closures`
#   floor     `noodle --version` | `nix-env --version` (process start-up)
#
# Usage (as root, from anywhere):
#   cargo build --release               # needs target/release/noodle (or NOODLE=…)
#   bench/profiles.sh                   # everything: 15 rounds of install, 30 of the others (~12 min + ~5 min deleting)
#   bench/profiles.sh --ops switch,rollback,list --runs 20
#   bench/profiles.sh --ops install --perf   # + perf/strace profile of one noodle install
# Details: bench/profiles_bench.py --help. Results: bench/out/profiles-results.md (+ profiles-raw.tsv,
# logs/profiles-*.log). Inputs are generated once into bench/data/inputs/profiles/ (kept).
set -euo pipefail
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
for c in nix-env nix-store nix python3 find xargs; do
  command -v "$c" >/dev/null || { echo "profiles.sh: missing $c (apt-get install nix-bin)" >&2; exit 1; }
done
[[ $(id -u) == 0 ]] || { echo "profiles.sh: run as root (Nix single-user private stores)" >&2; exit 1; }
exec python3 "$BENCH/profiles_bench.py" "$@"
