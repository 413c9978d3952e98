#!/usr/bin/env python3
"""Profile benchmarks: noodle vs nix-env (Nix 2.8), side by side in one run (a benchmark, never a test).

Run it through bench/profiles.sh (same options), as root:

  bench/profiles.sh                         all figures: 15 rounds of install, 30 of the others
  bench/profiles.sh --ops switch,list --runs 20
  bench/profiles.sh --ops install --perf    also profile extra noodle installs (perf, strace -c, phases)

Env: NOODLE=path/to/noodle (default <repo>/target/release/noodle; `cargo build --release` first).

Data (deterministic, generated once into bench/data/inputs/profiles/, kept):
  pkgs/  1,000 packages pkgNNNN-1.0.V, 20 files each: bin/pkgNNNN-tool and -helper, lib/libpkgNNNN.so.1
         and .a, share/man/man1/pkgNNNN-tool.1, share/doc/pkgNNNN/README, share/pkgNNNN/data-00…13
         (bin/, lib/, share/, share/man/man1/, share/doc/ are shared by all, so the merged tree has
         6 real directories and 7,000 symlinks); 49 MB of data in 20,000 files, seeded PRNG.
  next/  100 of them at 1.1.0 (every 10th: other contents) and 10 new ones, extraNN-1.0.0.
  tiny/  1,000 one-file packages tinyNNNN-1.0 (bin/tinyNNNN).

Figures (each tool has its own private store; the same directories are added to each):
  install   the generation of an empty profile holding the 1,000 packages, one command, in a fresh
            store per round (set up untimed: `store add` / `nix-store --add` of pkgs/):
              noodle         noodle --root R --profile /noodle/var/profiles/bench install <1,000 paths>
              nix            nix-env --store R -p P -i <1,000 paths>   (private chroot store, as
                             bench/run.sh: Nix builds its user environment in a sandbox there, which
                             bind-mounts the 1,000 inputs)
              nix-nosandbox  nix-env -p P -i <1,000 paths>, a private store at its own store dir
                             (NIX_STORE_DIR/NIX_STATE_DIR/NIX_LOG_DIR), sandbox = false: Nix's
                             cheapest configuration (Debian's default is sandbox = false)
              cp             cp -a of noodle's resulting tree (6 dirs + 7,000 symlinks + manifest):
                             the physical floor of writing that tree on this filesystem
  switch    `profile switch N` | `nix-env --switch-generation N`, N alternating 500 / 1000, in a
            profile of 1,000 generations
  rollback  `profile rollback` | `nix-env --rollback` (1000 → 999 → 998 …), same profiles
  list      `profile generations` | `nix-env --list-generations`, same profiles
  diff      `profile diff 1 3` of two 1,000-package generations (100 upgraded, 10 added,
            10 removed); Nix reference: `nix store diff-closures` (nix-command) of the same two
            package sets as user environments
  floor     `noodle --version` | `nix-env --version`: what starting each program costs
  The 1,000 generations: noodle installs tiny/ one path at a time (generation k holds k packages,
  so the manifests switch and rollback read are 500–1,000 packages); Nix gets one generation per
  `nix-env --set <tiny path>` (its switch/rollback/list read only the links, never a generation's
  contents, so their size does not matter to it).

Method: tools alternate every round (A B C, then C B A, …) after warm-up rounds; before every
timed command dirty data is synced and what the command reads (store, database, profile links,
manifests) is re-read into the page cache; every run is checked (the link moved to the right
generation, the tree has its 2,000 bin/ entries, the listing has 1,000 lines, the diff names
100/10/10 changes). Wall time is measured around the process (perf_counter), CPU is the child's
user+sys (RUSAGE_CHILDREN); cells are median (min–max); ratios are medians of per-round paired
ratios. The noodle binary is copied into the scratch directory first (a rebuild of the shared
target/ during the run cannot change what is measured). Results: bench/out/profiles-results.md,
raw bench/out/profiles-raw.tsv, logs bench/out/logs/profiles-*.log. Scratch (~12 GB):
bench/data/profiles/<stamp>/, deleted at the end unless --keep (that takes ~5 minutes: the noodle
generations store alone holds ~500,000 links); the deletion is recorded in bench/data/.last-delete
like bench/run.sh does, and timing starts only 65 s after the last one.
"""
import argparse
import fcntl
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import time

import benchlib
from benchlib import cpu_children, die, log, run_timed, setup, write_results

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
DATA = os.path.join(BENCH, "data")
INPUTS = os.path.join(DATA, "inputs", "profiles")
TRASH = os.path.join(DATA, "trash")
OUT = os.path.join(BENCH, "out")
LOGS = os.path.join(OUT, "logs")

# The shared helpers log here.
benchlib.LOGS = LOGS
benchlib.SETUP_LOG = "profiles-setup.log"

NIX_COMMON = ["--option", "substitute", "false"]
PROFILE = "/noodle/var/profiles/bench"
INPUT_VERSION = "v1"

N_PKGS = 1000
N_GENS = 1000
SWITCH_TARGETS = (500, 1000)
UPGRADED = [i for i in range(1, N_PKGS + 1) if i % 10 == 0]          # 100 → 1.1.0
REMOVED = [i for i in range(1, N_PKGS + 1) if i % 100 == 5]          # 10 dropped in generation 3
EXTRAS = ["extra%02d" % i for i in range(1, 11)]                     # 10 added




# ---------------------------------------------------------------------- page cache

def prime_tree(*paths):
    """Re-reads files (contents), symlinks (targets) and directories under paths."""
    for p in paths:
        subprocess.run(["bash", "-c", "find \"$1\" -type f -print0 | xargs -0 -r cat >/dev/null; "
                        "find \"$1\" -type l -printf '%l\\n' >/dev/null", "_", p], check=False)


def prime_files(*files):
    for f in files:
        try:
            with open(f, "rb") as fh:
                while fh.read(1 << 20):
                    pass
        except FileNotFoundError:
            pass


def prime_links(d):
    for name in os.listdir(d):
        p = os.path.join(d, name)
        if os.path.islink(p):
            os.readlink(p)


def db_files(d):
    return [os.path.join(d, f) for f in os.listdir(d)] if os.path.isdir(d) else []


# ---------------------------------------------------------------------- inputs

def write_package(d, name, rng, tag):
    files = {
        "bin/%s-tool" % name: b"#!/bin/sh\n# %s %s\nexec %s-helper \"$@\"\n" % (name.encode(), tag, name.encode()),
        "bin/%s-helper" % name: b"#!/bin/sh\necho %s %s\n" % (name.encode(), tag),
        "lib/lib%s.so.1" % name: None,
        "lib/lib%s.a" % name: None,
        "share/man/man1/%s-tool.1" % name: b".TH %s 1\n.SH NAME\n%s \\- %s\n" % (name.encode(), name.encode(), tag),
        "share/doc/%s/README" % name: b"%s %s: a benchmark package\n" % (name.encode(), tag),
    }
    for k in range(14):
        files["share/%s/data-%02d.txt" % (name, k)] = None
    for rel in sorted(files):
        p = os.path.join(d, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        data = files[rel] if files[rel] is not None else rng.randbytes(rng.randint(200, 5800))
        with open(p, "wb") as fh:
            fh.write(data)
        os.chmod(p, 0o755 if rel.startswith("bin/") else 0o644)


def pkg_name(i):
    return "pkg%04d" % i


def gen_inputs():
    stamp = os.path.join(INPUTS, ".complete-" + INPUT_VERSION)
    if os.path.exists(stamp):
        return
    if os.path.exists(INPUTS):
        os.rename(INPUTS, os.path.join(TRASH, "profiles-inputs-%d" % time.time()))
    log("generating %s: 1,000 packages × 20 files, 110 upgrades/additions, 1,000 one-file packages" % INPUTS)
    tmp = INPUTS + ".tmp"
    if os.path.exists(tmp):
        os.rename(tmp, os.path.join(TRASH, "profiles-inputs-tmp-%d" % time.time()))
    rng = random.Random(20261121)
    for i in range(1, N_PKGS + 1):
        write_package(os.path.join(tmp, "pkgs", "%s-1.0.%d" % (pkg_name(i), i % 7)), pkg_name(i), rng, b"1.0")
    for i in UPGRADED:
        write_package(os.path.join(tmp, "next", "%s-1.1.0" % pkg_name(i)), pkg_name(i), rng, b"1.1")
    for name in EXTRAS:
        write_package(os.path.join(tmp, "next", "%s-1.0.0" % name), name, rng, b"1.0")
    for i in range(1, N_GENS + 1):
        d = os.path.join(tmp, "tiny", "tiny%04d-1.0" % i, "bin")
        os.makedirs(d)
        with open(os.path.join(d, "tiny%04d" % i), "wb") as fh:
            fh.write(b"#!/bin/sh\necho tiny%04d\n" % i)
        os.chmod(os.path.join(d, "tiny%04d" % i), 0o755)
    open(os.path.join(tmp, ".complete-" + INPUT_VERSION), "w").close()
    os.rename(tmp, INPUTS)


def input_dirs(kind):
    d = os.path.join(INPUTS, kind)
    return [os.path.join(d, n) for n in sorted(os.listdir(d))]


def by_name(paths):
    """store paths → {name-version: path} (the part after '<32-char hash>-')."""
    out = {}
    for p in paths:
        out[os.path.basename(p)[33:]] = p
    return out


# ---------------------------------------------------------------------- stores

class Store:
    """One private store of one tool: its root, how to run commands in it, logical → physical."""

    def __init__(self, bench, kind, root):
        self.bench, self.kind, self.root = bench, kind, root
        self.env = None
        if kind == "nix-plain":
            self.env = dict(os.environ, NIX_STORE_DIR=os.path.join(root, "store"),
                            NIX_STATE_DIR=os.path.join(root, "var", "nix"),
                            NIX_LOG_DIR=os.path.join(root, "var", "log", "nix"))

    # where things are
    def physical(self, logical):
        if self.kind == "noodle":
            return self.root + logical
        if self.kind == "nix":
            return self.root + logical
        return logical

    def profile(self):
        """The physical path of the profile link."""
        if self.kind == "noodle":
            return os.path.join(self.root, "noodle", "var", "profiles", "bench")
        return os.path.join(self.root, "profiles", "bench")

    def db_dir(self):
        if self.kind == "noodle":
            return os.path.join(self.root, "noodle", "var", "db")
        if self.kind == "nix":
            return os.path.join(self.root, "nix", "var", "nix", "db")
        return os.path.join(self.root, "var", "nix", "db")

    # commands
    def noodle(self, *args):
        return [self.bench.noodle, "--root", self.root, "--profile", PROFILE, *args]

    def nix_env(self, *args):
        if self.kind == "nix":
            return ["nix-env", "--store", self.root, "-p", self.profile(), *args] + NIX_COMMON
        return ["nix-env", "-p", self.profile(), *args, "--option", "sandbox", "false"] + NIX_COMMON

    def create(self, dirs, what):
        """Initialises the store and adds dirs; returns their store paths."""
        if self.kind == "noodle":
            setup([self.bench.noodle, "--root", self.root, "init"], what)
            out = setup([self.bench.noodle, "--root", self.root, "store", "add", *dirs], what)
        elif self.kind == "nix":
            setup(["nix-store", "--store", self.root, "--init"], what)
            out = setup(["nix-store", "--store", self.root, "--add", *dirs], what)
        else:
            os.makedirs(self.root)
            setup(["nix-store", "--init"], what, self.env)
            out = setup(["nix-store", "--add", *dirs], what, self.env)
        paths = out.split()
        if len(paths) != len(dirs):
            die("%s: adding %d directories printed %d store paths" % (what, len(dirs), len(paths)))
        if self.kind != "noodle":
            os.makedirs(os.path.dirname(self.profile()), exist_ok=True)
        return paths

    def current(self):
        """The generation number the profile link names."""
        m = re.fullmatch(r"bench-(\d+)-link", os.path.basename(os.readlink(self.profile())))
        return int(m.group(1)) if m else None

    def generation_path(self, n):
        link = os.path.join(os.path.dirname(self.profile()), "bench-%d-link" % n)
        return self.physical(os.readlink(link))

    def generation_links(self):
        d = os.path.dirname(self.profile())
        return [n for n in os.listdir(d) if re.fullmatch(r"bench-\d+-link", n)]

    def prime_profile(self, *generations):
        """Database, profile links and (noodle) the manifests of generations."""
        prime_files(*db_files(self.db_dir()))
        prime_links(os.path.dirname(self.profile()))
        if self.kind == "noodle":
            prime_files(*[os.path.join(self.generation_path(n), "manifest.json") for n in generations])


def tree_problem(top):
    """None if top looks like the merged tree of pkgs/ (2,000 bin/ entries …)."""
    want = {"bin": 2000, "lib": 2000, "share/man/man1": 1000, "share/doc": 1000}
    for rel, n in want.items():
        try:
            got = len(os.listdir(os.path.join(top, rel)))
        except OSError as e:
            return "%s: %s" % (rel, e)
        if got != n:
            return "%s/%s has %d entries, expected %d" % (top, rel, got, n)
    return None


def phases(trace):
    """Wall-clock phases of `noodle install` from an strace -tt of a few marker syscalls."""
    rows = []
    for line in open(trace):
        m = re.match(r"(\d+)\s+(\d+):(\d+):([\d.]+)\s+(.*)", line)
        if m and "resumed" not in line and "+++" not in line:
            rows.append((int(m.group(2)) * 3600 + int(m.group(3)) * 60 + float(m.group(4)), m.group(5)))

    def first(pred, after):
        return next(t for t, s in rows if t >= after and pred(s))

    def quoted(s):
        return s.split('"')[1] if '"' in s else ""
    t0, end = rows[0][0], rows[-1][0]
    a = first(lambda s: s.startswith("mkdir") and quoted(s).endswith(".generation"), t0)
    b = first(lambda s: s.startswith("mkdir") and quoted(s).endswith(".generation/bin"), a)
    c = first(lambda s: s.startswith("openat") and quoted(s).endswith("/manifest.json"), b)
    d = first(lambda s: s.startswith("flock"), c)
    e = first(lambda s: s.startswith("rename") and ".generation" in s, d)
    f = first(lambda s: s.startswith("rename") and "-1-link" in s, e)
    parts = [("start, lock, read the 1,000 packages' records", t0, a), ("plan the tree (entry records)", a, b),
             ("write directories and links", b, c),
             ("manifest, fix metadata, walk the staged tree (hash, records)", c, d),
             ("locks, fsync directories, rename into the store", d, e), ("register in the database, link", e, f),
             ("switch, close", f, end)]
    return "total %.0f | " % ((end - t0) * 1e3) + " | ".join("%s %.0f" % (n, (y - x) * 1e3) for n, x, y in parts)


# ---------------------------------------------------------------------- the benchmark

class Bench:
    def __init__(self, args):
        self.args = args
        self.noodle = os.environ.get("NOODLE", os.path.join(REPO, "target", "release", "noodle"))
        self.stamp = time.strftime("%Y%m%dT%H%M%S")
        self.work = os.path.join(DATA, "profiles", self.stamp)
        self.raw = []          # (op, tool, round, wall, cpu)
        self.notes = []
        self.meta = {}

    def note(self, msg):
        log("NOTE: " + msg)
        self.notes.append(msg)

    def timed(self, op, tool, rnd, argv, env=None, check=None):
        c0 = cpu_children()
        wall, rc, out, err = run_timed(argv, "profiles-%s-%s.log" % (op, tool), env)
        cpu = cpu_children() - c0
        if rc != 0:
            sys.stderr.write((out + err)[-3000:])
            die("%s/%s round %s failed (rc %d): %s" % (op, tool, rnd, rc, " ".join(argv[:6])))
        if check is not None:
            problem = check(out, err)
            if problem:
                die("%s/%s round %s: %s" % (op, tool, rnd, problem))
        label = "w%d" % -rnd if rnd < 0 else "#%d" % rnd
        if rnd >= 0:
            self.raw.append((op, tool, rnd, wall, cpu))
        log("  %-9s %-14s %-4s %9.1f ms  (cpu %.1f ms)%s" % (op, tool, label, wall * 1e3, cpu * 1e3,
                                                         "  warm-up" if rnd < 0 else ""))
        return out

    def alternate(self, op, tools, runs, warmup):
        """tools: list of (name, prepare(rnd) -> (argv, env, check)); prepare primes the cache
        last. Round r runs them in order for even r, reversed for odd r; negative rounds are
        warm-ups (not recorded)."""
        for rnd in range(-warmup, runs):
            order = tools if rnd % 2 == 0 else tools[::-1]
            for name, prepare in order:
                argv, env, check = prepare(rnd)
                self.timed(op, name, rnd, argv, env, check)

    def wait_after_deletion(self):
        """The inode-reuse trap: no timing within 65 s of a mass deletion on this disk."""
        f = os.path.join(DATA, ".last-delete")
        if os.path.exists(f):
            age = time.time() - os.stat(f).st_mtime
            if age < 65:
                log("waiting %d s after the last mass deletion" % (65 - age))
                time.sleep(65 - age)

    # ------------------------------------------------------------------ setup

    def setup_install(self, extra_noodle):
        """Fresh stores per round and tool (and the cp reference tree)."""
        rounds = list(range(-1, self.args.runs_install))
        tools = ["noodle", "nix", "nix-plain"]
        log("install: setting up %d stores per tool (%s), each with the 1,000 packages"
            % (len(rounds), ", ".join(tools)))
        dirs = input_dirs("pkgs")
        self.inst = {}
        for rnd in rounds:
            for kind in tools:
                label = "w1" if rnd < 0 else "%02d" % rnd
                st = Store(self, kind, os.path.join(self.work, "install", "%s-%s" % (kind, label)))
                st.paths = st.create(dirs, "install store %s %s" % (kind, label))
                self.inst[(kind, rnd)] = st
        # the cp reference: the tree of one untimed noodle install
        ref = Store(self, "noodle", os.path.join(self.work, "install", "noodle-ref"))
        ref.paths = ref.create(dirs, "reference store")
        setup(ref.noodle("install", *ref.paths), "reference install")
        self.ref_tree = ref.generation_path(1)
        problem = tree_problem(self.ref_tree)
        if problem:
            die("noodle's merged tree is not what was expected: " + problem)
        self.ref_entries = int(subprocess.run(["bash", "-c", "find \"$1\" | wc -l", "_", self.ref_tree],
                                              capture_output=True, text=True).stdout)
        self.spare = []
        for k in range(extra_noodle):
            st = Store(self, "noodle", os.path.join(self.work, "install", "noodle-spare%d" % k))
            st.paths = st.create(dirs, "spare store")
            self.spare.append(st)

    def setup_generations(self):
        dirs = input_dirs("tiny")
        log("generations: noodle installs 1,000 one-file packages one at a time (~2 min)")
        nd = Store(self, "noodle", os.path.join(self.work, "gens", "noodle"))
        paths = nd.create(dirs, "generations store (noodle)")
        t0 = time.time()
        for k, p in enumerate(paths, 1):
            setup(nd.noodle("-q", "install", p), "noodle generation %d" % k)
            if k % 100 == 0:
                log("  noodle: %d generations (%.0f s)" % (k, time.time() - t0))
        log("generations: Nix, one `nix-env --set` per generation")
        nx = Store(self, "nix", os.path.join(self.work, "gens", "nix"))
        paths = nx.create(dirs, "generations store (Nix)")
        t0 = time.time()
        for k, p in enumerate(paths, 1):
            setup(nx.nix_env("--set", p), "Nix generation %d" % k)
            if k % 250 == 0:
                log("  nix: %d generations (%.0f s)" % (k, time.time() - t0))
        for st in (nd, nx):
            n, cur = len(st.generation_links()), st.current()
            if n != N_GENS or cur != N_GENS:
                die("%s: %d generation links, current %s; expected %d" % (st.kind, n, cur, N_GENS))
        self.gens = {"noodle": nd, "nix": nx}

    def setup_diff(self):
        log("diff: two 1,000-package generations per tool (100 upgraded, 10 added, 10 removed)")
        dirs = input_dirs("pkgs") + input_dirs("next")
        nd = Store(self, "noodle", os.path.join(self.work, "diff", "noodle"))
        names = by_name(nd.create(dirs, "diff store (noodle)"))
        old = [names[n] for n in sorted(names) if n.startswith("pkg") and not n.endswith("-1.1.0")]
        new = [names[n] for n in sorted(names) if n.endswith("-1.1.0") or n.startswith("extra")]
        setup(nd.noodle("install", *old), "noodle diff generation 1")
        setup(nd.noodle("install", *new), "noodle diff generation 2")
        setup(nd.noodle("remove", *[pkg_name(i) for i in REMOVED]), "noodle diff generation 3")
        if nd.current() != 3:
            die("noodle diff store: the profile is at generation %s, expected 3" % nd.current())
        # Nix: the same two package sets as two user environments, each installed into an empty
        # profile of its own: in a chroot store `nix-env -e` on an existing generation made an
        # empty one (it seems to read the current manifest through the link's host path).
        nx = Store(self, "nix", os.path.join(self.work, "diff", "nix"))
        names = by_name(nx.create(dirs, "diff store (Nix)"))
        gone = {pkg_name(i) for i in REMOVED} | {pkg_name(i) for i in UPGRADED}
        set_a = [names[n] for n in sorted(names) if n.startswith("pkg") and not n.endswith("-1.1.0")]
        set_b = [names[n] for n in sorted(names)
                 if (n.startswith("pkg") and not n.endswith("-1.1.0") and n.rsplit("-", 1)[0] not in gone)
                 or n.endswith("-1.1.0") or n.startswith("extra")]
        if len(set_a) != N_PKGS or len(set_b) != N_PKGS:
            die("diff sets have %d and %d packages" % (len(set_a), len(set_b)))
        envs = []
        for label, paths in (("a", set_a), ("b", set_b)):
            prof = os.path.join(nx.root, "profiles", "diff-" + label)
            setup(["nix-env", "--store", nx.root, "-p", prof, "-i", *paths] + NIX_COMMON, "Nix diff " + label)
            envs.append(os.readlink(prof + "-1-link"))
        nx.envs = envs
        self.diffs = {"noodle": nd, "nix": nx}

    # ------------------------------------------------------------------ operations

    def op_install(self):
        def tool(kind):
            def prepare(rnd):
                st = self.inst[(kind, rnd)]
                if kind == "noodle":
                    argv = st.noodle("install", *st.paths)
                else:
                    argv = st.nix_env("-i", *st.paths)

                def check(out, err):
                    if st.current() != 1:
                        return "the profile is not at generation 1"
                    return tree_problem(st.generation_path(1))
                os.sync()
                prime_tree(st.root)
                return argv, st.env, check
            return prepare

        def cp_prepare(rnd):
            dest = os.path.join(self.work, "install", "cp-%s" % ("w1" if rnd < 0 else "%02d" % rnd))
            os.sync()
            prime_tree(self.ref_tree)
            return ["cp", "-a", self.ref_tree, dest], None, lambda out, err: tree_problem(dest)

        tools = [("noodle", tool("noodle")), ("nix", tool("nix")), ("nix-nosandbox", tool("nix-plain")),
                 ("cp", cp_prepare)]
        log("install: %d rounds (+1 warm-up), alternating %s"
            % (self.args.runs_install, ", ".join(t for t, _ in tools)))
        self.alternate("install", tools, self.args.runs_install, 1)

    def profile_perf(self):
        """One noodle install under perf record, one under strace -c (spare stores)."""
        if len(self.spare) < 3:
            return
        perf = shutil.which("perf")
        st = self.spare[0]
        if perf:
            data = os.path.join(OUT, "profiles-perf.data")
            os.sync()
            prime_tree(st.root)
            setup([perf, "record", "-q", "-F", "5000", "--call-graph", "dwarf,65528", "-o", data, "--"]
                  + st.noodle("install", *st.paths), "perf record")
            rep = subprocess.run([perf, "report", "-i", data, "--children", "--sort", "sym", "--stdio", "-g", "none"],
                                 capture_output=True, text=True).stdout
            pattern = (r"\] (noodle_[a-z_]+::[A-Za-z_:<> ]+|noodle::[a-z_:]+|sqlite3_step|__x64_sys_[a-z0-9]+"
                       r"|rayon_core::registry::ThreadBuilder::run)$")
            keep = [ln for ln in rep.splitlines() if re.match(r"\s+\d", ln) and re.search(pattern, ln)][:45]
            with open(os.path.join(OUT, "profiles-perf.txt"), "w") as fh:
                fh.write("# perf record --call-graph dwarf of one `noodle install` of the 1,000 packages: inclusive\n"
                         "# share of all samples (every thread; perf slows the run down); __x64_sys_* are syscalls\n")
                fh.write("\n".join(keep) + "\n")
            os.remove(data)
            log("perf profile: %s" % os.path.join(OUT, "profiles-perf.txt"))
        else:
            self.note("perf not installed: no profile of noodle install")
        if not shutil.which("strace"):
            self.note("strace not installed: no syscall counts or phases of noodle install")
            return
        st = self.spare[1]
        os.sync()
        prime_tree(st.root)
        txt = os.path.join(OUT, "profiles-strace.txt")
        setup(["strace", "-f", "-c", "-o", txt] + st.noodle("install", *st.paths), "strace -c")
        log("syscall counts: %s" % txt)
        # Phases in wall time: only a few rare syscalls are traced (seccomp-bpf), as markers.
        st = self.spare[2]
        os.sync()
        prime_tree(st.root)
        trace = os.path.join(LOGS, "profiles-phases.strace")
        setup(["strace", "-f", "--seccomp-bpf", "-tt", "-e", "trace=execve,mkdir,rename,fsync,exit_group,flock,openat",
               "-o", trace] + st.noodle("install", *st.paths), "strace phases")
        with open(os.path.join(OUT, "profiles-phases.txt"), "w") as fh:
            fh.write("# one `noodle install` of the 1,000 packages, wall-clock phases (ms) from strace markers\n"
                     + phases(trace) + "\n")
        log("phases: " + phases(trace))

    def gens_tool(self, kind, argv_of, expect, primes):
        st = self.gens[kind]

        def prepare(rnd):
            argv = argv_of(st, rnd)
            want = expect(st, rnd)

            def check(out, err):
                if isinstance(want, int):
                    cur = st.current()
                    return None if cur == want else "the profile is at generation %s, expected %d" % (cur, want)
                return want(out)
            os.sync()
            st.prime_profile(*primes(st, rnd))
            return argv, st.env, check
        return prepare

    def op_switch(self):
        w = 3

        def target(rnd):
            return SWITCH_TARGETS[(rnd + w) % 2]
        tools = [
            ("noodle", self.gens_tool("noodle", lambda st, r: st.noodle("profile", "switch", str(target(r))),
                                      lambda st, r: target(r), lambda st, r: [target(r)])),
            ("nix", self.gens_tool("nix", lambda st, r: st.nix_env("--switch-generation", str(target(r))),
                                   lambda st, r: target(r), lambda st, r: [])),
        ]
        for st in self.gens.values():
            if st.current() == SWITCH_TARGETS[0]:
                die("%s: the profile is already at %d" % (st.kind, SWITCH_TARGETS[0]))
        log("switch: %d rounds (+%d warm-up), N alternating %s"
            % (self.args.runs, w, " / ".join(map(str, SWITCH_TARGETS))))
        self.alternate("switch", tools, self.args.runs, w)

    def op_rollback(self):
        w = 3
        for kind, st in self.gens.items():
            argv = st.noodle("profile", "switch", str(N_GENS)) if kind == "noodle" else \
                st.nix_env("--switch-generation", str(N_GENS))
            setup(argv, "switch back to %d" % N_GENS, st.env)
        tools = [
            ("noodle", self.gens_tool("noodle", lambda st, r: st.noodle("profile", "rollback"),
                                      lambda st, r: st.current() - 1, lambda st, r: [st.current() - 1])),
            ("nix", self.gens_tool("nix", lambda st, r: st.nix_env("--rollback"),
                                   lambda st, r: st.current() - 1, lambda st, r: [])),
        ]
        log("rollback: %d rounds (+%d warm-up), from generation %d down" % (self.args.runs, w, N_GENS))
        self.alternate("rollback", tools, self.args.runs, w)

    def op_list(self):
        w = 3

        def lines(out):
            n = len(out.splitlines())
            return None if n == N_GENS else "printed %d lines, expected %d" % (n, N_GENS)
        tools = [
            ("noodle", self.gens_tool("noodle", lambda st, r: st.noodle("profile", "generations"),
                                      lambda st, r: lines, lambda st, r: [])),
            ("nix", self.gens_tool("nix", lambda st, r: st.nix_env("--list-generations"),
                                   lambda st, r: lines, lambda st, r: [])),
        ]
        log("list: %d rounds (+%d warm-up)" % (self.args.runs, w))
        self.alternate("list", tools, self.args.runs, w)

    def op_diff(self):
        w = 3
        nd, nx = self.diffs["noodle"], self.diffs["nix"]

        def noodle_prepare(rnd):
            def check(out, err):
                got = [sum(1 for ln in out.splitlines() if ln.startswith(m)) for m in ("  ↑ ", "  + ", "  - ")]
                return None if got == [100, 10, 10] else "↑/+/- lines: %s, expected [100, 10, 10]" % got
            os.sync()
            nd.prime_profile(1, 3)
            return nd.noodle("profile", "diff", "1", "3"), None, check

        def nix_prepare(rnd):
            def check(out, err):
                n = sum(1 for ln in out.splitlines() if "→" in ln)
                return None if n == 120 else "%d version changes, expected 120" % n
            os.sync()
            prime_files(*db_files(nx.db_dir()))
            return ["nix", "--extra-experimental-features", "nix-command", "store", "diff-closures",
                    "--store", nx.root, *nx.envs] + NIX_COMMON, None, check
        tools = [("noodle", noodle_prepare), ("nix-diff-closures", nix_prepare)]
        log("diff: %d rounds (+%d warm-up)" % (self.args.runs, w))
        self.alternate("diff", tools, self.args.runs, w)

    def op_floor(self):
        """The cost of starting each program at all: `noodle --version` | `nix-env --version`."""
        w = 3

        def prepare(argv):
            return lambda rnd: (argv, None, None)
        tools = [("noodle", prepare([self.noodle, "--version"])), ("nix", prepare(["nix-env", "--version"]))]
        log("floor: %d rounds (+%d warm-up) of --version" % (self.args.runs, w))
        self.alternate("floor", tools, self.args.runs, w)

    # ------------------------------------------------------------------ report

    def report(self):
        data = {}
        for op, tool, rnd, wall, cpu in self.raw:
            data.setdefault((op, tool), {})[rnd] = (wall, cpu)
        with open(os.path.join(OUT, "profiles-raw.tsv"), "w") as fh:
            fh.write("op\ttool\tround\twall_s\tcpu_s\n")
            for r in self.raw:
                fh.write("%s\t%s\t%d\t%.6f\t%.6f\n" % r)

        def med(op, tool, i=0):
            v = [x[i] for x in data.get((op, tool), {}).values()]
            return statistics.median(v) if v else None

        def ms(x):
            return "n/a" if x is None else ("%.0f ms" % (x * 1e3) if x >= 0.1 else "%.1f ms" % (x * 1e3))

        def cell(op, tool):
            v = [x[0] for x in data.get((op, tool), {}).values()]
            return "n/a" if not v else "%s (%s–%s)" % (ms(statistics.median(v)), ms(min(v)), ms(max(v)))

        def ratio(op, a, b):
            """median over rounds of a / b."""
            da, db = data.get((op, a), {}), data.get((op, b), {})
            r = [da[k][0] / db[k][0] for k in da if k in db]
            return statistics.median(r) if r else None

        def ratio_str(x):
            return "n/a" if x is None else "%.2f×" % x

        L = ["# noodle profiles vs nix-env %s — %s" % (self.meta.get("nix_version", "?"), self.meta["date"]), ""]
        L.append("Host: %s. Load average at start / end: %s / %s. noodle: %s." % (
            self.meta["host"], self.meta["load_start"], self.meta.get("load_end", "?"), self.meta["noodle"]))
        L.append("Median wall time of the whole process; speed-ups are medians of per-round paired ratios "
                 "(Nix ÷ noodle); tools alternate every round.")
        L.append("")
        L += ["| figure | noodle | Nix | speed-up (Nix ÷ noodle) | target | met? |",
              "| --- | ---: | ---: | ---: | --- | --- |"]

        def row(title, op, nix_tool, target, speed_goal=None, abs_goal=None):
            if (op, "noodle") not in data:
                return
            n, x = med(op, "noodle"), med(op, nix_tool)
            s = ratio(op, nix_tool, "noodle")
            ok = []
            if abs_goal is not None:
                ok.append(n < abs_goal)
            if speed_goal is not None and s is not None:
                ok.append(s >= speed_goal)
            L.append("| %s | %s | %s | %s | %s | %s |" % (title, ms(n), ms(x), ratio_str(s), target,
                                                          "yes" if ok and all(ok) else "**no**"))
        row("1. install 1,000 packages × 20 files into an empty profile (vs Nix in a private chroot store)",
            "install", "nix", "< 1 s and ≥ 3×", 3, 1.0)
        row("1. the same vs Nix in a private store without sandbox", "install", "nix-nosandbox",
            "< 1 s and ≥ 3×", 3, 1.0)
        row("2. switch to generation N, 1,000 generations", "switch", "nix", "≥ 4×", 4)
        row("2. rollback, 1,000 generations", "rollback", "nix", "≥ 4×", 4)
        row("3. list 1,000 generations", "list", "nix", "≥ 4×", 4)
        row("4. diff of two 1,000-package generations (Nix: `nix store diff-closures`, reference only)",
            "diff", "nix-diff-closures", "< 20 ms", None, 0.020)
        L.append("")
        if ("floor", "noodle") in data and ("floor", "nix") in data:
            L.append("Process floor (`--version`, nothing else): noodle %s, nix-env %s. Every Nix figure above "
                     "includes its floor, so for the small commands the speed-up is mostly Nix's start-up."
                     % (ms(med("floor", "noodle")), ms(med("floor", "nix"))))
            L.append("")
        if ("install", "cp") in data and ("install", "noodle") in data:
            L.append("Physical floor of figure 1: `cp -a` of noodle's merged tree (%d entries: 6 directories, "
                     "7,000 symlinks, the manifest) takes %s; noodle install takes %.2f× that, Nix %.2f× "
                     "(sandbox) / %.2f× (no sandbox)." % (
                         self.ref_entries, ms(med("install", "cp")), ratio("install", "noodle", "cp"),
                         ratio("install", "nix", "cp") or 0, ratio("install", "nix-nosandbox", "cp") or 0))
            L.append("")
        ops = [("install", "1. install (%s rounds; fresh stores every round)" % self.args.runs_install,
                ["noodle", "nix", "nix-nosandbox", "cp"]),
               ("switch", "2. switch (%s rounds)" % self.args.runs, ["noodle", "nix"]),
               ("rollback", "2. rollback (%s rounds)" % self.args.runs, ["noodle", "nix"]),
               ("list", "3. list generations (%s rounds)" % self.args.runs, ["noodle", "nix"]),
               ("diff", "4. diff (%s rounds)" % self.args.runs, ["noodle", "nix-diff-closures"]),
               ("floor", "process floor: `--version` (%s rounds)" % self.args.runs, ["noodle", "nix"])]
        L += ["## Details", "", "| operation | tool | wall: median (min–max) | CPU (user+sys) median | vs noodle |",
              "| --- | --- | ---: | ---: | ---: |"]
        for op, title, tools in ops:
            for t in tools:
                if (op, t) in data:
                    L.append("| %s | %s | %s | %s | %s |" % (
                        title, t, cell(op, t), ms(med(op, t, 1)),
                        "—" if t == "noodle" else ratio_str(ratio(op, t, "noodle"))))
        L.append("")
        L.append("Nix options: `%s`; nix-nosandbox adds `--option sandbox false` and runs in a store at "
                 "its own store dir (NIX_STORE_DIR, NIX_STATE_DIR, NIX_LOG_DIR)." % " ".join(NIX_COMMON))
        write_results(L, self.notes, OUT, "profiles-results.md")

    # ------------------------------------------------------------------ main

    def cleanup(self):
        if self.args.keep:
            log("kept %s" % self.work)
            return
        moved = os.path.join(TRASH, "%s-profiles" % self.stamp)
        os.rename(self.work, moved)
        log("deleting this run's stores (%s)" % subprocess.run(["du", "-sh", moved], capture_output=True,
                                                                 text=True).stdout.split("\t")[0])
        subprocess.run(["rm", "-rf", moved])
        os.sync()
        open(os.path.join(DATA, ".last-delete"), "w").close()
        log("done (wait 65 s before timing anything else on this disk)")

    def main(self):
        os.makedirs(LOGS, exist_ok=True)
        os.makedirs(TRASH, exist_ok=True)
        for f in os.listdir(LOGS):
            if f.startswith("profiles-"):
                os.remove(os.path.join(LOGS, f))
        # leftovers of an interrupted run: delete now (the wait before timing covers it)
        old = os.path.join(DATA, "profiles")
        if os.path.isdir(old) and os.listdir(old):
            log("deleting leftovers in %s" % old)
            subprocess.run(["rm", "-rf", old])
            os.sync()
            open(os.path.join(DATA, ".last-delete"), "w").close()
        os.makedirs(self.work)
        nixv = subprocess.run(["nix-env", "--version"], capture_output=True, text=True).stdout.split()
        commit = subprocess.run(["git", "-C", REPO, "describe", "--always", "--dirty"],
                                capture_output=True, text=True).stdout.strip()
        # A snapshot of the binary: the shared target/ may be rebuilt while this runs.
        st = os.stat(self.noodle)
        snapshot = os.path.join(self.work, "bin", "noodle")
        os.makedirs(os.path.dirname(snapshot))
        shutil.copy2(self.noodle, snapshot)
        digest = subprocess.run(["sha256sum", snapshot], capture_output=True, text=True).stdout[:12]
        self.meta.update(
            date=time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()),
            nix_version=nixv[-1] if nixv else "?",
            host="%s %s, %d CPUs" % (platform.system(), platform.release(), os.cpu_count()),
            load_start="%.2f" % os.getloadavg()[0],
            noodle="%s (built %s, sha256 %s…, repo at %s when the run started)" % (
                self.noodle, time.strftime("%Y-%m-%dT%H:%M", time.localtime(st.st_mtime)), digest, commit or "?"))
        self.noodle = snapshot
        ops = self.args.ops.split(",")
        unknown = set(ops) - {"install", "switch", "rollback", "list", "diff", "floor"}
        if unknown:
            die("unknown operations: %s" % ", ".join(sorted(unknown)))
        try:
            gen_inputs()
            t0 = time.time()
            if "install" in ops:
                self.setup_install(3 if self.args.perf else 0)
            if {"switch", "rollback", "list"} & set(ops):
                self.setup_generations()
            if "diff" in ops:
                self.setup_diff()
            log("setup took %.0f s" % (time.time() - t0))
            os.sync()
            self.wait_after_deletion()
            self.meta["load_start"] = "%.2f" % os.getloadavg()[0]
            if "install" in ops:
                self.op_install()
                if self.args.perf:
                    self.profile_perf()
            if "switch" in ops:
                self.op_switch()
            if "rollback" in ops:
                self.op_rollback()
            if "list" in ops:
                self.op_list()
            if "diff" in ops:
                self.op_diff()
            if "floor" in ops:
                self.op_floor()
        finally:
            self.meta["load_end"] = "%.2f" % os.getloadavg()[0]
            if self.raw:
                self.report()
            self.cleanup()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=30, help="timed rounds of switch, rollback, list, diff (default 30)")
    ap.add_argument("--runs-install", type=int, default=15, help="timed rounds of install (default 15)")
    ap.add_argument("--ops", default="install,switch,rollback,list,diff,floor",
                    help="comma-separated subset of install,switch,rollback,list,diff,floor (default all)")
    ap.add_argument("--perf", action="store_true",
                    help="after install, profile three more noodle installs (perf record, strace -c, "
                         "strace phase markers) into bench/out/profiles-{perf,strace,phases}.txt")
    ap.add_argument("--keep", action="store_true", help="keep bench/data/profiles/<stamp>")
    args = ap.parse_args()
    if os.geteuid() != 0:
        die("run as root (Nix single-user private stores)")
    os.environ.pop("NIX_REMOTE", None)
    os.environ["LC_ALL"] = "C"
    noodle = os.environ.get("NOODLE", os.path.join(REPO, "target", "release", "noodle"))
    if not os.access(noodle, os.X_OK):
        die("no noodle binary at %s: run `cargo build --release` first (or set NOODLE)" % noodle)
    os.makedirs(DATA, exist_ok=True)
    # One benchmark at a time on bench/data (shared with bench/run.sh).
    lock = open(os.path.join(DATA, ".lock"), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        die("another benchmark holds %s" % os.path.join(DATA, ".lock"))
    Bench(args).main()


if __name__ == "__main__":
    main()
