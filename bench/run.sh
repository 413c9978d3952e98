#!/usr/bin/env bash
# bench/run.sh — noodle vs Nix (nix-store 2.8) side by side, same data, same run.
#
# Usage: bench/run.sh [--quick] [--runs N] [--ops add,verify,closure,gc,optimise] [--no-noodle]
#   --quick      3 runs per operation (default 5), 20 hyperfine runs for closure (default 50)
#   --runs N     N runs per operation
#   --ops LIST   only these operations (comma-separated; default all)
#   --no-noodle  Nix and the physical references only (automatic if the noodle binary is missing)
# Env: NOODLE=path/to/noodle (default: <repo>/target/release/noodle; build it yourself first).
#
# Operations (each tool gets a fresh private store per run, set up untimed):
#   add       `noodle store add` | `nix-store --add` | `cp -a`, on: big/ (one 1 GiB pseudo-random
#             file), tree/ (copy of /usr/lib/x86_64-linux-gnu + /usr/share/doc), small/ (20,000
#             files, ~94 MB). Peak RSS of every timed command is recorded too.
#   verify    `store verify --check-contents` | `nix-store --verify --check-contents` on a store
#             holding all three; `cat` and `b3sum` of the same files as physical references.
#   closure   `store closure TOP` | `nix-store -qR TOP` on a 2,000-path reference chain
#             (hyperfine median per store). Nix gets the chain by `--import` of a crafted export
#             stream (cached in data/cache/); noodle by 2,000 `store add --scan-references`.
#   gc        `store gc` | `nix-store --gc` deleting the same 2,000 paths, unrooted.
#   optimise  `store optimise` | `nix-store --optimise` on tree/ + tree-mod/ (every 10th file changed).
#
# Traps avoided (see /work/shared/guides/benchmarking.md): inputs (or the store) are re-read into
# the page cache right before every timed run and dirty data is synced first; tools alternate
# (noodle, nix, reference, noodle, nix, …) so each sees the same memory state; outputs of a run are
# renamed into data/trash/ and only deleted at the very end, and a new run waits until 65 s have
# passed since that deletion; all setup that creates many files runs before the timed operations
# that delete files (gc, then optimise, which frees the most, last).
#
# Data (deterministic, generated once, kept): data/inputs/, data/cache/. Results: out/results.md,
# out/raw.tsv (op, tool, run, wall s, max RSS KiB, user+sys s), out/logs/. Needs root, nix-bin, hyperfine,
# b3sum, openssl, python3, /usr/bin/time, and ~55 GB free (5 runs; ~35 GB with --quick).
set -euo pipefail
export LC_ALL=C
unset NIX_REMOTE

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH")
DATA=$BENCH/data
IN=$DATA/inputs
CACHE=$DATA/cache
TRASH=$DATA/trash
OUTD=$BENCH/out
LOGS=$OUTD/logs
RAW=$OUTD/raw.tsv
META=$OUTD/meta.txt
NOODLE=${NOODLE:-$REPO/target/release/noodle}
PY=$BENCH/bench.py

RUNS=5
HF_RUNS=50
OPS=add,verify,closure,gc,optimise
WITH_NOODLE=auto
CHAIN_N=2000
NOTES=""

while (($#)); do
  case $1 in
    --quick) RUNS=3; HF_RUNS=20 ;;
    --runs) RUNS=$2; shift ;;
    --ops) OPS=$2; shift ;;
    --no-noodle) WITH_NOODLE=no ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
want() { [[ ",$OPS," == *",$1,"* ]]; }
note() { log "NOTE: $*"; NOTES+="$* "; }

for c in nix-store hyperfine b3sum openssl python3 /usr/bin/time; do
  command -v "$c" >/dev/null || die "missing $c"
done
[[ $(id -u) == 0 ]] || die "run as root (Nix single-user private stores, cp -a of /usr)"

TOOLS=(nix)
if [[ $WITH_NOODLE != no ]]; then
  if [[ -x $NOODLE ]]; then TOOLS=(noodle nix)
  else log "noodle binary not found at $NOODLE: Nix and references only"; fi
fi
has_noodle() { [[ ${TOOLS[0]} == noodle ]]; }

# ---------------------------------------------------------------- helpers

# Re-read files into the page cache (it is reclaimed after ~10 s idle on these VMs).
prime() { find "$@" -type f -print0 | xargs -0 -r cat >/dev/null; }

# Flush dirty data of earlier runs, then prime: right before a timed command.
settle() { sync; prime "$@"; }

# Rename a finished run's output into the trash (deleted only at the end).
aside() { mv "$1" "$TRASH/$STAMP-$(basename "$1")"; }

# timed OP TOOL RUN CMD...: wall clock around the command (external), max RSS from /usr/bin/time.
timed() {
  local op=$1 tool=$2 run=$3; shift 3
  local lg=$LOGS/$op-$tool-$run.log t0 t1 secs rss cpu
  t0=$EPOCHREALTIME
  if ! /usr/bin/time -f '%M %U %S' -o "$LOGS/.rss" "$@" >"$lg" 2>&1; then
    tail -n 20 "$lg" >&2; die "$op/$tool run $run failed: $*  (log: $lg)"
  fi
  t1=$EPOCHREALTIME
  read -r rss cpu < <(tail -n 1 "$LOGS/.rss" | awk '{ printf "%s %.2f\n", $1, $2 + $3 }')
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f", b - a }')
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$op" "$tool" "$run" "$secs" "$rss" "$cpu" >>"$RAW"
  log "  $op  $tool  #$run  ${secs}s  (cpu ${cpu}s)  ${rss} KiB"
}

# Setup command (untimed); output to the setup log.
setup() { "$@" >>"$LOGS/setup.log" 2>&1 || { tail -n 20 "$LOGS/setup.log" >&2; die "setup failed: $*"; }; }

count_entries() { find "$1" -mindepth 1 -maxdepth 1 ! -name '.*' | wc -l; }

mb() { du -scb "$@" | tail -n 1 | awk '{ printf "%.0f MB", $1 / 1e6 }'; }
gb() { du -scb "$@" | tail -n 1 | awk '{ printf "%.2f GB", $1 / 1e9 }'; }
nfiles() { find "$@" -type f | wc -l; }

# ---------------------------------------------------------------- tools
# Each tool: <tool>_init R, <tool>_store R (physical store dir), and <tool>_<op>_cmd ARGS that set
# the array CMD (timed by the caller). Same names for noodle and nix: parallel functions per op.

# noodle: --root R, store dir R/noodle/store, logical paths /noodle/store/...
noodle_init()         { setup "$NOODLE" --root "$1" init; }
noodle_store()        { echo "$1/noodle/store"; }
noodle_add_cmd()      { CMD=("$NOODLE" --root "$1" store add "$2" --name "$3"); }
noodle_verify_cmd()   { CMD=("$NOODLE" --root "$1" store verify --check-contents); }
noodle_closure_cmd()  { CMD=("$NOODLE" --root "$1" store closure "$2"); }
noodle_gc_cmd()       { CMD=("$NOODLE" --root "$1" store gc); }
noodle_optimise_cmd() { CMD=("$NOODLE" --root "$1" store optimise); }
# The chain: c-i is a dir whose file `refs` holds the store paths of c-(i-1) and, for even i > 2,
# c-(i/2) — the same graph as bench.py's Nix export. Sets CHAIN_TOP.
noodle_chain() {
  local R=$1 src=$1.src i refs
  local -a P
  noodle_init "$R"
  mkdir -p "$src"
  for ((i = 1; i <= CHAIN_N; i++)); do
    refs=""
    ((i > 1)) && refs=${P[i - 1]}
    ((i > 2 && i % 2 == 0)) && refs+=" ${P[i / 2]}"
    mkdir "$src/c-$i"
    printf '%s\n' "$refs" >"$src/c-$i/refs"
    P[i]=$("$NOODLE" --root "$R" store add "$src/c-$i" --name "c-$i" --scan-references 2>>"$LOGS/setup.log" | tail -n 1) ||
      die "noodle store add --scan-references failed for c-$i (see $LOGS/setup.log)"
    [[ -n ${P[i]} ]] || die "noodle store add printed no path for c-$i"
  done
  CHAIN_TOP=${P[CHAIN_N]}
}

# nix: --store R (a chroot store: logical /nix/store, files under R/nix/store)
nix_init()         { setup nix-store --store "$1" --init; }
nix_store()        { echo "$1/nix/store"; }
nix_add_cmd()      { CMD=(nix-store --store "$1" --add "$2"); }   # name = basename of $2 = $3
nix_verify_cmd()   { CMD=(nix-store --store "$1" --verify --check-contents); }
nix_closure_cmd()  { CMD=(nix-store --store "$1" -qR "$2"); }
nix_gc_cmd()       { CMD=(nix-store --store "$1" --gc); }
nix_optimise_cmd() { CMD=(nix-store --store "$1" --optimise); }
nix_chain() {
  nix_init "$1"
  nix-store --store "$1" --import <"${CHAIN_EXPORT:-$CACHE/chain.nixexport}" >>"$LOGS/setup.log" 2>&1 ||
    die "nix-store --import of the chain failed"
  CHAIN_TOP=$(cat "$CACHE/chain.top")
}

# physical references
cp_add_cmd()    { CMD=(cp -a "$2" "$1/$3"); }
cat_cmd()       { CMD=(bash -c 'find "$@" -type f -print0 | xargs -0 cat >/dev/null' _ "$@"); }
b3sum_cmd()     { CMD=(bash -c 'find "$@" -type f -print0 | xargs -0 b3sum >/dev/null' _ "$@"); }

# untimed add into a store (setup)
store_add() { local t=$1 R=$2 in=$3; "${t}_add_cmd" "$R" "$in" "$(basename "$in")"; setup "${CMD[@]}"; }

# ---------------------------------------------------------------- data (generated once, kept)

gen_tmp() {  # fresh temp dir for a generator; leftovers of an interrupted one go to the trash
  local t=$IN/.tmp-$1
  [[ -e $t ]] && mv "$t" "$TRASH/$STAMP-tmp-$1"
  mkdir -p "$t"; echo "$t"
}

gen_data() {
  local t
  if [[ ! -f $IN/big/blob ]]; then
    log "generating big/blob: 1 GiB, AES-128-CTR keystream with a fixed key"
    t=$(gen_tmp big)
    head -c 1073741824 /dev/zero |
      openssl enc -aes-128-ctr -nosalt -K 6e6f6f646c652d62656e63682d303031 -iv 00000000000000000000000000000000 >"$t/blob"
    [[ $(stat -c %s "$t/blob") == 1073741824 ]] || die "big/blob has the wrong size"
    mv "$t" "$IN/big"
  fi
  if [[ ! -d $IN/tree ]]; then
    log "generating tree/: copy of /usr/lib/x86_64-linux-gnu and /usr/share/doc"
    t=$(gen_tmp tree)
    cp -a --no-preserve=ownership,xattr,context,links /usr/lib/x86_64-linux-gnu /usr/share/doc "$t/"
    find "$t" \( -type b -o -type c -o -type p -o -type s \) -delete
    mv "$t" "$IN/tree"
  fi
  if [[ ! -d $IN/small ]]; then
    log "generating small/: 20,000 files"
    t=$(gen_tmp small)
    python3 "$PY" small "$t" >/dev/null
    mv "$t" "$IN/small"
  fi
  if want optimise && [[ ! -d $IN/tree-mod ]]; then
    log "generating tree-mod/: tree/ with every 10th regular file (sorted) changed"
    t=$(gen_tmp tree-mod)
    rmdir "$t"; cp -a "$IN/tree" "$t"
    python3 "$PY" mutate "$t" >&2
    mv "$t" "$IN/tree-mod"
  fi
  if { want closure || want gc; } && [[ ! -f $CACHE/chain.nixexport ]]; then
    log "crafting the Nix export stream of the $CHAIN_N-path chain, checking it imports"
    python3 "$PY" nixchain "$CHAIN_N" "$CACHE/chain.nixexport.new" "$CACHE/chain.top"
    local R=$WORK/chain-check n
    CHAIN_EXPORT=$CACHE/chain.nixexport.new nix_chain "$R"
    n=$(nix-store --store "$R" -qR "$CHAIN_TOP" | wc -l)
    [[ $n == "$CHAIN_N" ]] || die "crafted chain: closure has $n paths, expected $CHAIN_N"
    setup nix-store --store "$R" --verify --check-contents
    mv "$CACHE/chain.nixexport.new" "$CACHE/chain.nixexport"
  fi
}
# ---------------------------------------------------------------- operations

op_add() {
  local input i t R
  for input in big tree small; do
    log "add: $input"
    for ((i = 1; i <= RUNS; i++)); do
      for t in "${TOOLS[@]}" cp; do
        R=$WORK/add-$input-$t-$i
        if [[ $t == cp ]]; then mkdir -p "$R"; else "${t}_init" "$R"; fi
        "${t}_add_cmd" "$R" "$IN/$input" "$input"
        settle "$IN/$input"
        timed "add-$input" "$t" "$i" "${CMD[@]}"
        aside "$R"
      done
    done
  done
}

op_verify() {
  local i t R
  log "verify: setting up one store per tool holding big, tree, small"
  for t in "${TOOLS[@]}"; do
    R=$WORK/verify-$t
    "${t}_init" "$R"
    store_add "$t" "$R" "$IN/big"; store_add "$t" "$R" "$IN/tree"; store_add "$t" "$R" "$IN/small"
  done
  for ((i = 1; i <= RUNS; i++)); do
    for t in "${TOOLS[@]}"; do
      R=$WORK/verify-$t
      "${t}_verify_cmd" "$R"
      settle "$R"
      timed verify "$t" "$i" "${CMD[@]}"
    done
    cat_cmd "$IN/big" "$IN/tree" "$IN/small"
    settle "$IN/big" "$IN/tree" "$IN/small"
    timed verify cat "$i" "${CMD[@]}"
    b3sum_cmd "$IN/big" "$IN/tree" "$IN/small"
    settle "$IN/big" "$IN/tree" "$IN/small"
    timed verify b3sum "$i" "${CMD[@]}"
  done
}

setup_optimise() {
  local i t R
  log "optimise: setting up $RUNS stores per tool holding tree and tree-mod"
  for ((i = 1; i <= RUNS; i++)); do
    for t in "${TOOLS[@]}"; do
      R=$WORK/optimise-$t-$i
      "${t}_init" "$R"
      store_add "$t" "$R" "$IN/tree"; store_add "$t" "$R" "$IN/tree-mod"
    done
  done
}

setup_chains() {
  local i t R
  log "closure/gc: setting up $RUNS stores per tool holding the $CHAIN_N-path chain"
  for ((i = 1; i <= RUNS; i++)); do
    for t in "${TOOLS[@]}"; do
      R=$WORK/chain-$t-$i
      "${t}_chain" "$R"
      echo "$CHAIN_TOP" >"$R.top"
    done
  done
}

op_closure() {
  local i t R top n js rss cmdstr med cpu
  log "closure: hyperfine, $HF_RUNS runs per store"
  for ((i = 1; i <= RUNS; i++)); do
    for t in "${TOOLS[@]}"; do
      R=$WORK/chain-$t-$i; top=$(cat "$R.top")
      "${t}_closure_cmd" "$R" "$top"
      n=$("${CMD[@]}" 2>>"$LOGS/setup.log" | wc -l)
      if [[ $n != "$CHAIN_N" ]]; then
        [[ $t == noodle ]] || die "$t closure printed $n paths, expected $CHAIN_N"
        note "noodle closure printed $n paths, expected $CHAIN_N."
      fi
      prime "$R"
      js=$LOGS/closure-$t-$i.json
      printf -v cmdstr '%q ' "${CMD[@]}"
      hyperfine -N --style none --warmup 3 --runs "$HF_RUNS" --export-json "$js" "$cmdstr" \
        >"$LOGS/closure-$t-$i.log" 2>&1 || { tail "$LOGS/closure-$t-$i.log" >&2; die "hyperfine failed: $cmdstr"; }
      /usr/bin/time -f %M -o "$LOGS/.rss" "${CMD[@]}" >/dev/null 2>&1
      rss=$(tail -n 1 "$LOGS/.rss")
      read -r med cpu < <(python3 "$PY" hfmedian "$js")
      printf '%s\t%s\t%s\t%s\t%s\t%s\n' closure "$t" "$i" "$med" "$rss" "$cpu" >>"$RAW"
      log "  closure  $t  #$i  median ${med}s  (cpu ${cpu}s)  ${rss} KiB"
    done
  done
}

op_optimise() {
  local i t R
  log "optimise"
  for ((i = 1; i <= RUNS; i++)); do
    for t in "${TOOLS[@]}"; do
      R=$WORK/optimise-$t-$i
      "${t}_optimise_cmd" "$R"
      settle "$R"
      timed optimise "$t" "$i" "${CMD[@]}"
      aside "$R"
    done
  done
}

op_gc() {
  local i t R n
  log "gc"
  for ((i = 1; i <= RUNS; i++)); do
    for t in "${TOOLS[@]}"; do
      R=$WORK/chain-$t-$i
      "${t}_gc_cmd" "$R"
      settle "$R"
      timed gc "$t" "$i" "${CMD[@]}"
      n=$(count_entries "$("${t}_store" "$R")")
      if [[ $n != 0 ]]; then
        [[ $t == noodle ]] || die "$t gc left $n store entries"
        note "noodle gc left $n store entries."
      fi
      aside "$R"
    done
  done
}

# ---------------------------------------------------------------- main

mkdir -p "$DATA" "$IN" "$CACHE" "$TRASH" "$OUTD"
# One run at a time: a second run would move this one's outputs into the trash and skew timings.
exec 9>"$DATA/.lock"
flock -n 9 || die "another bench/run.sh is running (lock $DATA/.lock held by pid $(fuser "$DATA/.lock" 2>/dev/null))"
STAMP=$(date +%Y%m%dT%H%M%S)
# Leftovers of an interrupted run (and the previous logs): into the trash, then delete now.
for d in "$DATA"/work/*; do
  if [[ -e $d ]]; then mv "$d" "$TRASH/$STAMP-old-$(basename "$d")"; fi
done
if [[ -e $LOGS ]]; then mv "$LOGS" "$TRASH/$STAMP-logs"; fi
if [[ -n $(ls -A "$TRASH") ]]; then
  log "deleting leftovers in $TRASH"
  rm -rf "$TRASH"; mkdir -p "$TRASH"; sync; touch "$DATA/.last-delete"
fi
WORK=$DATA/work/$STAMP
mkdir -p "$WORK" "$LOGS"
printf '# op\ttool\trun\twall_seconds\tmaxrss_kib\tcpu_seconds\n' >"$RAW"

avail=$(df --output=avail -B1G "$DATA" | tail -n 1)
need=$(( (${#TOOLS[@]} + 1) * RUNS * 2 + ${#TOOLS[@]} * 2 + ${#TOOLS[@]} * RUNS * 2 + 5 ))
((avail >= need)) || die "need about $need GB free under $DATA, have $avail GB"

gen_data

# Wait until 65 s have passed since the last mass deletion (inode-reuse trap).
if [[ -f $DATA/.last-delete ]]; then
  age=$(( $(date +%s) - $(stat -c %Y "$DATA/.last-delete") ))
  if ((age < 65)); then log "waiting $((65 - age)) s after the last mass deletion"; sleep $((65 - age)); fi
fi

log "tools: ${TOOLS[*]} (+ cp/cat/b3sum); runs: $RUNS; ops: $OPS"
want add && op_add
want verify && op_verify
want optimise && setup_optimise
{ want closure || want gc; } && setup_chains
want closure && op_closure
want gc && op_gc
want optimise && op_optimise

{
  echo "date=$(date -u +%Y-%m-%dT%H:%MZ)"
  echo "host=Linux $(uname -r), $(nproc) CPUs, $(free -g | awk '/Mem:/ { print $2 }') GiB RAM, $(findmnt -no FSTYPE,OPTIONS -T "$DATA" | tr -s ' ' | cut -d, -f1-3)"
  echo "nix_version=$(nix-store --version | awk '{ print $NF }')"
  echo "runs=$RUNS"
  if has_noodle; then
    echo "noodle=$NOODLE (built $(date -r "$NOODLE" +%Y-%m-%dT%H:%M), commit $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo none))"
  else
    echo "noodle=not run"
  fi
  echo "tree=$(mb "$IN/tree"), $(nfiles "$IN/tree") files"
  echo "small=$(mb "$IN/small")"
  echo "all=$(gb "$IN/big" "$IN/tree" "$IN/small")"
  [[ -d $IN/tree-mod ]] && echo "opt=$(gb "$IN/tree" "$IN/tree-mod")"
  echo "data=big/blob b3sum $(b3sum --no-names "$IN/big/blob" | cut -c1-16)…; tree/ $(mb "$IN/tree") in $(nfiles "$IN/tree") files + $(find "$IN/tree" -type l | wc -l) symlinks; small/ $(nfiles "$IN/small") files, $(mb "$IN/small"); Nix chain: crafted export, $CHAIN_N paths, each refs c-(i-1) and for even i also c-(i/2)."
  echo "notes=$NOTES"
} >"$META"
python3 "$PY" report "$RAW" "$META" "$OUTD/results.md"

log "deleting this run's outputs ($(du -sh "$WORK" "$TRASH" 2>/dev/null | awk '{ s = s " " $1 } END { print s }'))"
mv "$WORK" "$TRASH/$STAMP-work"
rm -rf "$TRASH" "$DATA/work"; mkdir -p "$TRASH"; sync; touch "$DATA/.last-delete"
log "done: $OUTD/results.md (wait 65 s before timing anything else on this disk)"
