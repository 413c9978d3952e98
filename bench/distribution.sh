#!/usr/bin/env bash
# bench/distribution.sh — noodle's binary caches and bundles vs `nix copy` (Nix 2.8) and tar + zstd,
# side by side, same tree, same run.
#
#   push        `noodle copy --to file://C` | `nix copy --to 'file://C?compression=zstd&secret-key=K'`
#   fetch-http  `noodle copy --from http://127.0.0.1:P` (python3 -m http.server over noodle's file
#               cache; and `noodle serve`) | `nix copy --from http://127.0.0.1:P` (python3 -m
#               http.server over Nix's file cache), into fresh stores          (target: ≥ 2× faster)
#   fetch-file  the same from file://C                                          (target: ≥ 2× faster)
#   export      `noodle bundle export` | `tar -c | zstd -3`                     (target: ≤ 1.5× tar)
#   import      `noodle bundle import` | `zstd -d | tar -x`, into fresh stores/dirs (target: ≤ 1.5×)
#
# Usage (as root, from anywhere):
#   cargo build --release                 # the noodle side needs target/release/noodle (or NOODLE=…)
#   bench/distribution.sh                 # everything, 3 rounds, the real tree (1.1 GB) as one path
#   bench/distribution.sh --runs 5 --paths 40 --ops fetch-http,import
#   bench/distribution.sh --tree DIR --runs 1        # a quick trial on a small tree
#   bench/distribution.sh --no-noodle     # Nix and tar only (automatic without the binary)
# Details: bench/distribution_bench.py --help. Results: bench/out/distribution-results.md
# (+ distribution-raw.tsv, logs/distribution-*.log). Scratch ~10× the tree per round, deleted at the end.
set -euo pipefail
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
for c in nix nix-store python3 tar zstd find xargs du /usr/bin/time; do
  command -v "$c" >/dev/null || { echo "distribution.sh: missing $c (apt-get install nix-bin zstd time)" >&2; exit 1; }
done
[[ $(id -u) == 0 ]] || { echo "distribution.sh: run as root (Nix single-user private stores)" >&2; exit 1; }
exec python3 "$BENCH/distribution_bench.py" "$@"
