#!/usr/bin/env python3
"""Distribution benchmarks: noodle's binary caches and bundles vs `nix copy` (Nix 2.8) and
tar + zstd, side by side in one run on the same tree (a benchmark, never a test).

Run it through bench/distribution.sh (same options), as root:

  bench/distribution.sh                         everything, 3 rounds, the real tree as one path
  bench/distribution.sh --runs 5 --paths 40     5 rounds; the tree split into 40 paths + a top
  bench/distribution.sh --tree /tmp/small --runs 1 --no-noodle     a quick trial, Nix and tar only

Env: NOODLE=path/to/noodle (default <repo>/target/release/noodle; `cargo build --release` first;
without it, or with --no-noodle, only the Nix and tar side runs).

The closure (bench/data/inputs/tree: /usr/lib/x86_64-linux-gnu + /usr/share/doc, the store-core
benchmark's "real tree", made like bench/run.sh makes it if missing; --tree DIR for another):
  --paths 1   one store path `tree` holding the whole tree (default)
  --paths N   N paths `tree-part-NN` (the tree's second-level entries, balanced by size; copies
              kept in bench/data/inputs/dist-split-N) and a top path `tree` whose file `refs`
              names them all (so it references them): a closure of N + 1 paths
  Nix's source store gets the closure by `nix-store --import` of an export stream made from
  `nix-store --dump` (with the top's references written into the stream). Not by
  `nix-store --add`: that makes content-addressed paths, for which Nix 2.8 checks no signature
  at all when fetching (and re-hashes the whole tree to check the CA instead).
  noodle's source store gets it by `store add` (the top with --scan-references).

Figures (each tool has its own stores; every destination is fresh; tools alternate every round,
A B C then C B A):
  push        nix     nix copy --store SRC --to 'file://C?compression=zstd&secret-key=K' TOP
              noodle  noodle --root SRC --option secret-key-files=K copy --to file://C TOP
  fetch-http  nix           nix copy --from http://127.0.0.1:P --to DST TOP   (python3 -m http.server
                            over Nix's file cache; trusted-public-keys = its key; a fresh
                            XDG_CACHE_HOME so Nix's narinfo disk cache never answers)
              noodle        noodle --root DST --option trusted-public-keys=PUB copy --from
                            http://127.0.0.1:P TOP   (python3 -m http.server over noodle's file cache)
              noodle-serve  the same from `noodle --root SRC serve --listen 127.0.0.1:P`
  fetch-file  nix / noodle  the same from file://C (no server)
  export      noodle  noodle --root SRC --option secret-key-files=K bundle export TOP -o F
              tar     tar -cf - -C PARENT ENTRIES | zstd -3 -q > F        (the input tree itself)
  import      noodle  noodle --root DST --option trusted-public-keys=PUB bundle import F
              tar     zstd -d -q -c F | tar -xf - -C DST
  The served caches, the bundle and the .tar.zst that fetch/import read are made untimed in setup.

Method (the traps of /work/shared/guides/benchmarking.md): dirty data is synced and what the
command reads (source store, served cache, bundle) is re-read into the page cache right before
every timed command; wall time is the tool's process only (an external clock around it; the
`sync` after it is timed separately and reported, since Nix, tar and zstd leave their writes
dirty); nothing is deleted until the end and timing starts 65 s after the last mass deletion
(bench/data/.last-delete); every run is checked (the destination holds the closure with the
source's number of entries; round 0's destinations are also verified with --check-contents).
The servers' CPU time during each fetch is recorded too (they share the 2 CPUs with the client).
Results: bench/out/distribution-results.md, raw bench/out/distribution-raw.tsv, logs
bench/out/logs/distribution-*.log. Scratch: bench/data/distribution/<stamp>/ (~10× the tree per
round), deleted at the end unless --keep.
"""
import argparse
import fcntl
import hashlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

import benchlib
from bench import nar_dir_one_file, nix32, nstr, u64
from benchlib import cpu_children, die, log, run_timed, setup, write_results

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
DATA = os.path.join(BENCH, "data")
INPUTS = os.path.join(DATA, "inputs")
TRASH = os.path.join(DATA, "trash")
OUT = os.path.join(BENCH, "out")
LOGS = os.path.join(OUT, "logs")

benchlib.LOGS = LOGS
benchlib.SETUP_LOG = "distribution-setup.log"

NIX = ["nix", "--experimental-features", "nix-command"]
NIX_KEY = "nix-bench-1"
NOODLE_KEY = "noodle-bench-1"
EXPORT_MAGIC = 0x4558494E
ALL_OPS = ["push", "fetch-http", "fetch-file", "export", "import"]
# Rough size of each round's outputs, in units of the tree (caches/archives ~0.6, stores 1).
SPACE = {"push": 1.2, "fetch-http": 3.0, "fetch-file": 2.0, "export": 1.2, "import": 2.0}


# ---------------------------------------------------------------------- files

def prime_tree(*paths):
    """Re-reads files (contents), symlinks (targets) and directories under paths."""
    for p in paths:
        subprocess.run(["bash", "-c", "find \"$1\" -type f -print0 | xargs -0 -r cat >/dev/null; "
                        "find \"$1\" -type l -printf '%l\\n' >/dev/null", "_", p], check=False)


def count_entries(path):
    """Entries under path, itself included (files, directories, symlinks)."""
    if not os.path.lexists(path):
        return 0
    n = 1
    for _, dirs, files in os.walk(path):
        n += len(dirs) + len(files)
    return n


def tree_bytes(path):
    """Apparent size of the regular files under path."""
    total = 0
    for d, _, files in os.walk(path):
        for f in files:
            st = os.lstat(os.path.join(d, f))
            if not os.path.islink(os.path.join(d, f)):
                total += st.st_size
    return total


def dir_bytes(path):
    return int(subprocess.run(["du", "-sb", path], capture_output=True, text=True).stdout.split()[0])


def gen_real_tree():
    """bench/data/inputs/tree, exactly as bench/run.sh makes it."""
    tree = os.path.join(INPUTS, "tree")
    if os.path.isdir(tree):
        return tree
    log("generating %s: copy of /usr/lib/x86_64-linux-gnu and /usr/share/doc" % tree)
    tmp = os.path.join(INPUTS, ".tmp-tree")
    if os.path.exists(tmp):
        os.rename(tmp, os.path.join(TRASH, "dist-tmp-tree-%d" % time.time()))
    os.makedirs(tmp)
    setup(["cp", "-a", "--no-preserve=ownership,xattr,context,links", "/usr/lib/x86_64-linux-gnu",
           "/usr/share/doc", tmp + "/"], "copy the real tree")
    setup(["find", tmp, "(", "-type", "b", "-o", "-type", "c", "-o", "-type", "p", "-o", "-type", "s", ")",
           "-delete"], "drop special files")
    os.rename(tmp, tree)
    return tree


def gen_split(tree, n, dest):
    """dest/tree-part-01 … tree-part-N: the tree's second-level entries (first level for files),
    each part holding <top>/<entry> copies, greedily balanced by size (largest first)."""
    stamp = os.path.join(dest, ".complete")
    if os.path.exists(stamp):
        return sorted(os.path.join(dest, d) for d in os.listdir(dest) if d.startswith("tree-part-"))
    if os.path.exists(dest):
        os.rename(dest, os.path.join(TRASH, "dist-split-%d" % time.time()))
    log("splitting %s into %d parts under %s" % (tree, n, dest))
    items = []
    for top in sorted(os.listdir(tree)):
        tp = os.path.join(tree, top)
        if os.path.isdir(tp) and not os.path.islink(tp):
            for e in sorted(os.listdir(tp)):
                p = os.path.join(tp, e)
                size = tree_bytes(p) if os.path.isdir(p) and not os.path.islink(p) else os.lstat(p).st_size
                items.append((size, top, e))
        else:
            items.append((os.lstat(tp).st_size, "", top))
    items.sort(key=lambda x: (-x[0], x[1], x[2]))
    bins = [[0, []] for _ in range(n)]
    for size, top, e in items:
        b = min(range(n), key=lambda i: (bins[i][0], i))
        bins[b][0] += size
        bins[b][1].append((top, e))
    tmp = dest + ".tmp"
    if os.path.exists(tmp):
        os.rename(tmp, os.path.join(TRASH, "dist-split-tmp-%d" % time.time()))
    parts = []
    for i, (_, members) in enumerate(bins):
        part = os.path.join(tmp, "tree-part-%02d" % (i + 1))
        by_top = {}
        for top, e in members:
            by_top.setdefault(top, []).append(os.path.join(tree, top, e))
        os.makedirs(part)
        for top, srcs in sorted(by_top.items()):
            d = os.path.join(part, top)
            os.makedirs(d, exist_ok=True)
            setup(["cp", "-a", *srcs, d + "/"], "copy part %d" % (i + 1))
        parts.append(os.path.join(dest, os.path.basename(part)))
    open(os.path.join(tmp, ".complete"), "w").close()
    os.rename(tmp, dest)
    return parts


def nix_path(name):
    return "/nix/store/%s-%s" % (nix32(hashlib.sha256(b"noodle-bench-dist-" + name.encode()).digest()[:20]), name)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def proc_cpu(pid):
    """utime + stime of a live process, seconds."""
    with open("/proc/%d/stat" % pid) as fh:
        f = fh.read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def proc_hwm_kib(pid):
    with open("/proc/%d/status" % pid) as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return None


# ---------------------------------------------------------------------- servers

class Server:
    """A server this run started (killed by its own handle only)."""

    def __init__(self, name, argv, probe, cwd=None):
        self.name, self.port = name, free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        argv = [a.replace("{PORT}", str(self.port)) for a in argv]
        self.logfile = open(os.path.join(LOGS, "distribution-server-%s.log" % name), "ab")
        self.proc = subprocess.Popen(argv, stdout=self.logfile, stderr=self.logfile, stdin=subprocess.DEVNULL,
                                     cwd=cwd)
        deadline = time.time() + 15
        while True:
            if self.proc.poll() is not None:
                self.logfile.flush()
                with open(self.logfile.name, "rb") as fh:
                    sys.stderr.write(fh.read()[-3000:].decode(errors="replace"))
                die("server %s exited (rc %s) before answering: %s" % (name, self.proc.returncode, " ".join(argv)))
            try:
                with urllib.request.urlopen(self.url + "/" + probe, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                die("server %s does not answer GET /%s on %s" % (name, probe, self.url))
            time.sleep(0.1)
        log("server %s: %s (pid %d)" % (name, self.url, self.proc.pid))

    def cpu(self):
        return proc_cpu(self.proc.pid)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logfile.close()


# ---------------------------------------------------------------------- the benchmark

class Bench:
    def __init__(self, args):
        self.args = args
        self.noodle = os.environ.get("NOODLE", os.path.join(REPO, "target", "release", "noodle"))
        self.with_noodle = not args.no_noodle and os.access(self.noodle, os.X_OK)
        self.stamp = time.strftime("%Y%m%dT%H%M%S")
        self.work = os.path.join(DATA, "distribution", self.stamp)
        self.raw = []          # (op, tool, round, wall, cpu, server_cpu, sync, rss_kib)
        self.notes = []
        self.meta = {}
        self.servers = {}
        self.sizes = {}

    def note(self, msg):
        log("NOTE: " + msg)
        self.notes.append(msg)

    def w(self, *parts):
        return os.path.join(self.work, *parts)

    def nd(self, root, *args):
        return [self.noodle, "--root", root, *args]

    # ------------------------------------------------------------------ timing

    def timed(self, op, tool, rnd, argv, env=None, server=None, check=None):
        rssf = self.w("rss")
        c0 = cpu_children()
        s0 = server.cpu() if server else 0.0
        wall, rc, out, err = run_timed(["/usr/bin/time", "-f", "%M", "-o", rssf, *argv],
                                       "distribution-%s-%s.log" % (op, tool), env)
        s1 = server.cpu() if server else 0.0
        cpu = cpu_children() - c0
        if rc != 0:
            sys.stderr.write((out + err)[-3000:])
            die("%s/%s round %d failed (rc %d): %s" % (op, tool, rnd, rc, " ".join(argv[:10])))
        t0 = time.perf_counter()
        os.sync()
        sync = time.perf_counter() - t0
        with open(rssf) as fh:
            rss = int(fh.read().split()[-1])
        if check is not None:
            problem = check()
            if problem:
                die("%s/%s round %d: %s" % (op, tool, rnd, problem))
        label = "w%d" % -rnd if rnd < 0 else "#%d" % rnd
        if rnd >= 0:
            self.raw.append((op, tool, rnd, wall, cpu, s1 - s0, sync, rss))
        log("  %-10s %-12s %-4s %8.3f s  (cpu %.2f s%s, sync after %.2f s, %d MiB)%s" % (
            op, tool, label, wall, cpu, ", server cpu %.2f s" % (s1 - s0) if server else "", sync, rss // 1024,
            "  warm-up" if rnd < 0 else ""))

    def alternate(self, op, tools):
        """tools: list of (name, prepare(rnd) -> dict(argv, env?, server?, check?)); prepare makes the
        fresh destination and primes the page cache last."""
        for rnd in range(-self.args.warmup, self.args.runs):
            order = tools if rnd % 2 == 0 else tools[::-1]
            for name, prepare in order:
                spec = prepare(rnd)
                os.sync()
                spec.pop("prime", lambda: None)()
                self.timed(op, name, rnd, spec["argv"], spec.get("env"), spec.get("server"), spec.get("check"))

    def wait_after_deletion(self):
        f = os.path.join(DATA, ".last-delete")
        if os.path.exists(f):
            age = time.time() - os.stat(f).st_mtime
            if age < 65:
                log("waiting %d s after the last mass deletion" % (65 - age))
                time.sleep(65 - age)

    # ------------------------------------------------------------------ setup

    def setup_inputs(self):
        tree = os.path.abspath(self.args.tree) if self.args.tree else gen_real_tree()
        if not os.path.isdir(tree):
            die("--tree %s is not a directory" % tree)
        self.tree = tree
        if self.args.paths == 1:
            self.parts = [tree]
            self.tar_parent, self.tar_names = os.path.dirname(tree), [os.path.basename(tree)]
        else:
            dest = (os.path.join(INPUTS, "dist-split-%d" % self.args.paths) if not self.args.tree
                    else self.w("split"))
            self.parts = gen_split(tree, self.args.paths, dest)
            self.tar_parent, self.tar_names = dest, [os.path.basename(p) for p in self.parts]
        self.tree_bytes = sum(tree_bytes(p) for p in self.parts)
        self.tree_entries = sum(count_entries(p) for p in self.parts)
        self.meta["tree"] = "%s: %.2f GB in %d entries%s" % (
            tree, self.tree_bytes / 1e9, self.tree_entries,
            "" if self.args.paths == 1 else ", as %d paths + a top path" % self.args.paths)

    def check_space(self):
        ops = self.args.ops
        per_round = sum(SPACE[o] for o in ops) * (1 if self.with_noodle else 0.6)
        need = self.tree_bytes * (per_round * (self.args.runs + self.args.warmup) + 6) * 1.1
        avail = shutil.disk_usage(DATA).free
        if avail < need:
            die("need about %.0f GB free under %s, have %.0f GB (fewer --runs or --ops)" % (need / 1e9, DATA,
                                                                                           avail / 1e9))

    def setup_keys(self):
        k = self.w("keys")
        os.makedirs(k)
        setup(["nix-store", "--generate-binary-cache-key", NIX_KEY, os.path.join(k, "nix.sec"),
               os.path.join(k, "nix.pub")], "nix key")
        self.nix_sec = os.path.join(k, "nix.sec")
        self.nix_pub = open(os.path.join(k, "nix.pub")).read().strip()
        if self.with_noodle:
            # It writes into the current directory.
            p = subprocess.run([self.noodle, "key", "generate", NOODLE_KEY], cwd=k, capture_output=True, text=True)
            with open(os.path.join(LOGS, benchlib.SETUP_LOG), "a") as fh:
                fh.write("$ (cd %s) noodle key generate %s\n%s%s\n" % (k, NOODLE_KEY, p.stdout, p.stderr))
            if p.returncode != 0:
                sys.stderr.write(p.stdout + p.stderr)
                die("noodle key generate %s failed (rc %d)" % (NOODLE_KEY, p.returncode))
            out = p.stdout
            self.noodle_sec = os.path.join(k, NOODLE_KEY + ".sec")
            pubfile = os.path.join(k, NOODLE_KEY + ".pub")
            if not os.path.exists(self.noodle_sec) or not os.path.exists(pubfile):
                die("noodle key generate %s did not write %s.sec and .pub in %s" % (NOODLE_KEY, NOODLE_KEY, k))
            self.noodle_pub = open(pubfile).read().strip()
            if self.noodle_pub not in out:
                self.note("`noodle key generate` printed %r, not the public key %r." % (out.strip()[:80],
                                                                                        self.noodle_pub))

    def nix_source(self):
        """Nix's source store: the closure imported from an export stream (input-addressed)."""
        S = self.w("src", "nix")
        setup(["nix-store", "--store", S, "--init"], "nix source store")
        entries = []
        if self.args.paths == 1:
            entries.append((nix_path("tree"), [], self.parts[0]))
        else:
            pp = [nix_path(os.path.basename(p)) for p in self.parts]
            entries += [(q, [], p) for q, p in zip(pp, self.parts)]
            entries.append((nix_path("tree"), pp, nar_dir_one_file("refs", (" ".join(pp) + "\n").encode())))
        lg = open(os.path.join(LOGS, benchlib.SETUP_LOG), "ab")
        imp = subprocess.Popen(["nix-store", "--store", S, "--import"], stdin=subprocess.PIPE, stdout=lg, stderr=lg)
        for path, refs, src in entries:
            imp.stdin.write(u64(1))
            if isinstance(src, bytes):
                imp.stdin.write(src)
            else:
                dump = subprocess.Popen(["nix-store", "--dump", src], stdout=subprocess.PIPE, stderr=lg)
                shutil.copyfileobj(dump.stdout, imp.stdin, 1 << 20)
                if dump.wait() != 0:
                    die("nix-store --dump %s failed" % src)
            imp.stdin.write(u64(EXPORT_MAGIC) + nstr(path) + u64(len(refs)) + b"".join(nstr(r) for r in sorted(refs))
                            + nstr("") + u64(0))
        imp.stdin.write(u64(0))
        imp.stdin.close()
        if imp.wait() != 0:
            die("nix-store --import into %s failed (see %s)" % (S, lg.name))
        lg.close()
        self.nix_src, self.nix_top = S, nix_path("tree")
        closure = setup(["nix-store", "--store", S, "-qR", self.nix_top], "nix closure").split()
        want = len(self.parts) + (self.args.paths > 1)
        if len(closure) != want:
            die("nix source closure has %d paths, expected %d" % (len(closure), want))
        self.nix_names = [os.path.basename(p) for p in closure]
        self.nix_counts = sum(count_entries(S + p) for p in closure)
        info = setup(NIX + ["path-info", "--store", S, "--json", "-r", self.nix_top], "nix path-info")
        self.sizes["NAR (Nix)"] = sum(x["narSize"] for x in json.loads(info))

    def noodle_source(self):
        R = self.w("src", "noodle")
        setup(self.nd(R, "init"), "noodle init")
        if self.args.paths == 1:
            out = setup(self.nd(R, "store", "add", self.parts[0], "--name", "tree"), "noodle store add")
            top = out.split()[-1] if out.split() else die("noodle store add printed no path")
        else:
            pp = setup(self.nd(R, "store", "add", *self.parts), "noodle store add parts").split()
            if len(pp) != len(self.parts):
                die("noodle store add of %d parts printed %d paths" % (len(self.parts), len(pp)))
            d = self.w("src", "noodle-top", "tree")
            os.makedirs(d)
            with open(os.path.join(d, "refs"), "w") as fh:
                fh.write(" ".join(pp) + "\n")
            out = setup(self.nd(R, "store", "add", d, "--scan-references"), "noodle store add top")
            top = out.split()[-1] if out.split() else die("noodle store add printed no path for the top")
        closure = setup(self.nd(R, "store", "closure", top), "noodle closure").split()
        want = len(self.parts) + (self.args.paths > 1)
        if len(closure) != want:
            die("noodle source closure has %d paths, expected %d (did --scan-references find the parts?)"
                % (len(closure), want))
        self.noodle_src, self.noodle_top = R, top
        self.noodle_names = [os.path.basename(p) for p in closure]
        self.noodle_counts = sum(count_entries(R + p) for p in closure)
        self.noodle_store_dir = os.path.dirname(top)

    def setup_served(self):
        """The caches, bundle and archive that fetch/import read; the servers."""
        os.makedirs(self.w("serve"))
        ops = self.args.ops
        if {"fetch-http", "fetch-file"} & set(ops):
            self.nix_cache = self.w("serve", "nix-cache")
            setup(NIX + ["copy", "--store", self.nix_src, "--to",
                         "file://%s?compression=zstd&secret-key=%s" % (self.nix_cache, self.nix_sec), self.nix_top],
                  "nix copy to the served cache", env=self.nix_env("serve"))
            self.sizes["Nix file cache (nar.zst)"] = dir_bytes(os.path.join(self.nix_cache, "nar"))
            if self.with_noodle:
                self.noodle_cache = self.w("serve", "noodle-cache")
                setup(self.nd(self.noodle_src, "--option", "secret-key-files=" + self.noodle_sec, "copy", "--to",
                              "file://" + self.noodle_cache, self.noodle_top), "noodle copy to the served cache")
                self.sizes["noodle file cache (nar.zst)"] = dir_bytes(os.path.join(self.noodle_cache, "nar"))
        if "fetch-http" in ops:
            py = [sys.executable, "-m", "http.server", "{PORT}", "--bind", "127.0.0.1", "--directory"]
            self.servers["py-nix"] = Server("py-nix", py + [self.nix_cache], "nix-cache-info")
            if self.with_noodle:
                self.servers["py-noodle"] = Server("py-noodle", py + [self.noodle_cache], "cache-info")
                self.servers["serve"] = Server("serve", self.nd(
                    self.noodle_src, "--option", "secret-key-files=" + self.noodle_sec, "serve", "--listen",
                    "127.0.0.1:{PORT}"), "cache-info")
        if "import" in ops:
            self.tar_file = self.w("serve", "tree.tar.zst")
            setup(self.tar_argv(self.tar_file), "tar | zstd")
            self.sizes["tar | zstd -3"] = os.stat(self.tar_file).st_size
            if self.with_noodle:
                self.bundle = self.w("serve", "tree.noodle")
                setup(self.export_argv(self.bundle), "noodle bundle export")
                self.sizes["noodle bundle"] = os.stat(self.bundle).st_size

    # ------------------------------------------------------------------ commands

    def nix_env(self, tag):
        """A fresh XDG_CACHE_HOME: Nix keeps narinfo lookups (positive and negative) in
        ~/.cache/nix/binary-cache-v6.sqlite, which would skip requests on later runs."""
        return dict(os.environ, XDG_CACHE_HOME=self.w("xdg", tag))

    def tar_argv(self, out):
        return ["bash", "-c", 'set -o pipefail; tar -cf - -C "$1" "${@:3}" | zstd -3 -q >"$2"', "_",
                self.tar_parent, out, *self.tar_names]

    def export_argv(self, out):
        return self.nd(self.noodle_src, "--option", "secret-key-files=" + self.noodle_sec, "bundle", "export",
                       self.noodle_top, "-o", out)

    def dest(self, op, tool, rnd):
        return self.w("r", "%s-%s-%d" % (op, tool, rnd))

    def nix_dest_store(self, d):
        setup(["nix-store", "--store", d, "--init"], "nix destination store")

    def noodle_dest_store(self, d):
        setup(self.nd(d, "init"), "noodle destination store")

    def check_store(self, kind, d):
        if kind == "nix":
            got, want = sum(count_entries(os.path.join(d, "nix", "store", n)) for n in self.nix_names), self.nix_counts
        else:
            got = sum(count_entries(d + os.path.join(self.noodle_store_dir, n)) for n in self.noodle_names)
            want = self.noodle_counts
        return None if got == want else "%s holds %d entries of the closure, the source %d" % (d, got, want)

    def check_cache(self, d):
        want = len(self.parts) + (self.args.paths > 1)
        ni = [f for f in os.listdir(d) if f.endswith(".narinfo")] if os.path.isdir(d) else []
        nars = os.listdir(os.path.join(d, "nar")) if os.path.isdir(os.path.join(d, "nar")) else []
        if len(ni) != want or len(nars) != want:
            return "%s has %d narinfo and %d NAR files, expected %d" % (d, len(ni), len(nars), want)
        return None

    def verify_round0(self, kind, d, rnd):
        if rnd != 0:
            return
        if kind == "nix":
            setup(["nix-store", "--store", d, "--verify", "--check-contents"], "verify " + d)
            sigs = setup(NIX + ["path-info", "--store", d, "--sigs", self.nix_top], "nix path-info --sigs")
            if NIX_KEY + ":" not in sigs:
                die("%s: the fetched path carries no signature by %s: %s" % (d, NIX_KEY, sigs.strip()))
        else:
            setup(self.nd(d, "store", "verify", "--check-contents"), "verify " + d)

    # ------------------------------------------------------------------ operations

    def op_push(self):
        def nix(rnd):
            d = self.dest("push", "nix", rnd)
            return dict(argv=NIX + ["copy", "--store", self.nix_src, "--to",
                                    "file://%s?compression=zstd&secret-key=%s" % (d, self.nix_sec), self.nix_top],
                        env=self.nix_env("push-%d" % rnd), prime=lambda: prime_tree(self.nix_src),
                        check=lambda: self.check_cache(d))

        def noodle(rnd):
            d = self.dest("push", "noodle", rnd)
            return dict(argv=self.nd(self.noodle_src, "--option", "secret-key-files=" + self.noodle_sec, "copy",
                                     "--to", "file://" + d, self.noodle_top),
                        prime=lambda: prime_tree(self.noodle_src), check=lambda: self.check_cache(d))
        tools = [("nix", nix)] + ([("noodle", noodle)] if self.with_noodle else [])
        log("push: %s" % ", ".join(t for t, _ in tools))
        self.alternate("push", tools)

    def fetch_tools(self, op):
        def nix(rnd):
            d = self.dest(op, "nix", rnd)
            self.nix_dest_store(d)
            if op == "fetch-http":
                srv = self.servers["py-nix"]
                url, prime = srv.url, lambda: prime_tree(self.nix_cache)
            else:
                srv, url, prime = None, "file://" + self.nix_cache, lambda: prime_tree(self.nix_cache)

            def check():
                p = self.check_store("nix", d)
                if not p:
                    self.verify_round0("nix", d, rnd)
                return p
            return dict(argv=NIX + ["copy", "--from", url, "--to", d, "--option", "trusted-public-keys",
                                    self.nix_pub, self.nix_top],
                        env=self.nix_env("%s-%d" % (op, rnd)), server=srv, prime=prime, check=check)

        def noodle(server_name):
            def prepare(rnd):
                tool = "noodle" if server_name != "serve" else "noodle-serve"
                d = self.dest(op, tool, rnd)
                self.noodle_dest_store(d)
                if op == "fetch-http":
                    srv = self.servers[server_name]
                    url = srv.url
                    prime = ((lambda: prime_tree(self.noodle_src)) if server_name == "serve"
                             else (lambda: prime_tree(self.noodle_cache)))
                else:
                    srv, url, prime = None, "file://" + self.noodle_cache, lambda: prime_tree(self.noodle_cache)

                def check():
                    p = self.check_store("noodle", d)
                    if not p and tool == "noodle":
                        self.verify_round0("noodle", d, rnd)
                    return p
                return dict(argv=self.nd(d, "--option", "trusted-public-keys=" + self.noodle_pub, "copy", "--from",
                                         url, self.noodle_top), server=srv, prime=prime, check=check)
            return prepare
        tools = [("nix", nix)]
        if self.with_noodle:
            tools.append(("noodle", noodle("py-noodle")))
            if op == "fetch-http":
                tools.append(("noodle-serve", noodle("serve")))
        return tools

    def op_fetch(self, op):
        tools = self.fetch_tools(op)
        log("%s: %s" % (op, ", ".join(t for t, _ in tools)))
        self.alternate(op, tools)

    def op_export(self):
        def tar(rnd):
            f = self.dest("export", "tar", rnd) + ".tar.zst"
            return dict(argv=self.tar_argv(f), prime=lambda: prime_tree(*self.parts),
                        check=lambda: None if os.path.getsize(f) > 0 else "%s is empty" % f)

        def noodle(rnd):
            f = self.dest("export", "noodle", rnd) + ".noodle"
            return dict(argv=self.export_argv(f), prime=lambda: prime_tree(self.noodle_src),
                        check=lambda: None if os.path.exists(f) and os.path.getsize(f) > 0 else "no bundle at %s" % f)
        tools = ([("noodle", noodle)] if self.with_noodle else []) + [("tar", tar)]
        log("export: %s" % ", ".join(t for t, _ in tools))
        self.alternate("export", tools)

    def op_import(self):
        def tar(rnd):
            d = self.dest("import", "tar", rnd)
            os.makedirs(d)

            def check():
                got = sum(count_entries(os.path.join(d, n)) for n in self.tar_names)
                return None if got == self.tree_entries else "%s holds %d entries, expected %d" % (
                    d, got, self.tree_entries)
            return dict(argv=["bash", "-c", 'set -o pipefail; zstd -d -q -c "$1" | tar -xf - -C "$2"', "_",
                              self.tar_file, d], prime=lambda: prime_tree(self.tar_file), check=check)

        def noodle(rnd):
            d = self.dest("import", "noodle", rnd)
            self.noodle_dest_store(d)

            def check():
                p = self.check_store("noodle", d)
                if not p:
                    self.verify_round0("noodle", d, rnd)
                return p
            return dict(argv=self.nd(d, "--option", "trusted-public-keys=" + self.noodle_pub, "bundle", "import",
                                     self.bundle), prime=lambda: prime_tree(self.bundle), check=check)
        tools = ([("noodle", noodle)] if self.with_noodle else []) + [("tar", tar)]
        log("import: %s" % ", ".join(t for t, _ in tools))
        self.alternate("import", tools)

    # ------------------------------------------------------------------ report

    def report(self):
        data = {}
        for op, tool, rnd, *vals in self.raw:
            data.setdefault((op, tool), {})[rnd] = vals   # wall, cpu, server_cpu, sync, rss
        with open(os.path.join(OUT, "distribution-raw.tsv"), "w") as fh:
            fh.write("op\ttool\tround\twall_s\tcpu_s\tserver_cpu_s\tsync_after_s\tmaxrss_kib\n")
            for r in self.raw:
                fh.write("%s\t%s\t%d\t%.6f\t%.4f\t%.4f\t%.4f\t%d\n" % r)

        def med(op, tool, i=0):
            v = [x[i] for x in data.get((op, tool), {}).values()]
            return statistics.median(v) if v else None

        def secs(x):
            return "n/a" if x is None else ("%.2f s" % x if x >= 1 else "%.0f ms" % (x * 1e3))

        def cell(op, tool):
            v = [x[0] for x in data.get((op, tool), {}).values()]
            if not v:
                return "n/a"
            return secs(statistics.median(v)) if len(v) == 1 else "%s (%s–%s)" % (
                secs(statistics.median(v)), secs(min(v)), secs(max(v)))

        def ratio(op, a, b):
            da, db = data.get((op, a), {}), data.get((op, b), {})
            r = [da[k][0] / db[k][0] for k in da if k in db and db[k][0] > 0]
            return statistics.median(r) if r else None

        def rs(x):
            return "n/a" if x is None else "%.2f×" % x

        def mbs(op, tool):
            m = med(op, tool)
            return "n/a" if not m else "%.0f MB/s" % (self.tree_bytes / m / 1e6)

        m = self.meta
        L = ["# noodle distribution vs nix copy %s and tar + zstd — %s" % (m.get("nix_version", "?"), m["date"]), ""]
        L.append("Host: %s. Load average at start / end: %s / %s. Tree: %s. %d round(s), tools alternating. "
                 "noodle: %s. %s." % (m["host"], m["load_start"], m.get("load_end", "?"), m["tree"], self.args.runs,
                                       m["noodle"], m["versions"]))
        L.append("Median (min–max) wall time of the tool's process; speed-ups and ratios are medians of "
                 "per-round paired ratios; MB/s = the tree's file bytes ÷ median wall time.")
        L.append("")
        L += ["| figure | noodle | peer | speed-up (peer ÷ noodle) | target | met? |",
              "| --- | ---: | ---: | ---: | --- | --- |"]

        def row(title, op, tool, peer, goal, faster):
            if (op, tool) not in data and (op, peer) not in data:
                return
            r = ratio(op, peer, tool)
            if faster:
                ok = r is not None and r >= goal
                target = "≥ %g× faster" % goal
            else:
                ok = r is not None and 1 / r <= goal
                target = "≤ %g× the reference's time" % goal
            L.append("| %s | %s | %s | %s | %s | %s |" % (
                title, cell(op, tool), cell(op, peer), rs(r), target,
                "n/a" if r is None else ("yes" if ok else "**no**")))
        row("push to a file:// cache (Nix: `nix copy --to file://…?compression=zstd`)", "push", "noodle", "nix", 2, True)
        row("fetch over loopback HTTP, `python3 -m http.server` over each tool's file cache", "fetch-http", "noodle",
            "nix", 2, True)
        row("fetch over loopback HTTP, noodle from `noodle serve` (Nix as above)", "fetch-http", "noodle-serve", "nix",
            2, True)
        row("fetch from a file:// cache", "fetch-file", "noodle", "nix", 2, True)
        row("bundle export vs `tar -c | zstd -3`", "export", "noodle", "tar", 1.5, False)
        row("bundle import vs `zstd -d | tar -x`", "import", "noodle", "tar", 1.5, False)
        L.append("")
        L += ["## Details", "",
              "| operation | tool | wall: median (min–max) | throughput | CPU (user+sys) | server CPU | "
              "`sync` after | max RSS | time ÷ first row's |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for op in ALL_OPS:
            tools = [t for (o, t) in data if o == op]
            tools.sort(key=lambda t: ["noodle", "noodle-serve", "nix", "tar"].index(t))
            for t in tools:
                L.append("| %s | %s | %s | %s | %s | %s | %s | %d MiB | %s |" % (
                    op, t, cell(op, t), mbs(op, t), secs(med(op, t, 1)),
                    secs(med(op, t, 2)) if op == "fetch-http" else "—", secs(med(op, t, 3)),
                    med(op, t, 4) // 1024, "—" if t == tools[0] else rs(ratio(op, t, tools[0]))))
        L.append("")
        if self.sizes:
            L.append("Sizes: " + "; ".join("%s %.1f MB" % (k, v / 1e6) for k, v in self.sizes.items()) +
                     "; tree files %.1f MB." % (self.tree_bytes / 1e6))
            L.append("")
        L.append("Nix: `%s`; its source store holds the closure as input-addressed paths (imported from "
                 "an export stream), so fetching checks its signature (trusted-public-keys = the run's key) "
                 "and the NAR hash; each Nix run gets a fresh XDG_CACHE_HOME (no narinfo disk cache). "
                 "noodle: `--option secret-key-files=…` when writing, `--option trusted-public-keys=…` when "
                 "reading (require-sigs at its default). Round 0's destinations were verified with "
                 "`--check-contents` (and Nix's fetched path carries the signature)." % " ".join(NIX))
        write_results(L, self.notes, OUT, "distribution-results.md")

    # ------------------------------------------------------------------ main

    def cleanup(self):
        for s in self.servers.values():
            s.stop()
        if self.args.keep:
            log("kept %s" % self.work)
            return
        if not os.path.exists(self.work):
            return
        moved = os.path.join(TRASH, "%s-distribution" % self.stamp)
        os.rename(self.work, moved)
        log("deleting this run's scratch (%s)" % subprocess.run(["du", "-sh", moved], capture_output=True,
                                                                 text=True).stdout.split("\t")[0])
        subprocess.run(["rm", "-rf", moved])
        os.sync()
        open(os.path.join(DATA, ".last-delete"), "w").close()
        log("done (wait 65 s before timing anything else on this disk)")

    def main(self):
        os.makedirs(LOGS, exist_ok=True)
        os.makedirs(TRASH, exist_ok=True)
        for f in os.listdir(LOGS):
            if f.startswith("distribution-"):
                os.remove(os.path.join(LOGS, f))
        old = os.path.join(DATA, "distribution")
        if os.path.isdir(old) and os.listdir(old):
            log("deleting leftovers in %s" % old)
            subprocess.run(["rm", "-rf", old])
            os.sync()
            open(os.path.join(DATA, ".last-delete"), "w").close()
        os.makedirs(self.work)
        nixv = subprocess.run(["nix-store", "--version"], capture_output=True, text=True).stdout.split()
        zv = subprocess.run(["zstd", "-V"], capture_output=True, text=True).stdout.split(",")[0].replace("*", "")
        tv = subprocess.run(["tar", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
        self.meta.update(
            date=time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()), nix_version=nixv[-1] if nixv else "?",
            host="%s %s, %d CPUs" % (platform.system(), platform.release(), os.cpu_count()),
            load_start="%.2f" % os.getloadavg()[0],
            versions="%s; %s; Python %s (http.server)" % (zv.strip(), tv, platform.python_version()),
            noodle="not run")
        if self.with_noodle:
            commit = subprocess.run(["git", "-C", REPO, "describe", "--always", "--dirty"],
                                    capture_output=True, text=True).stdout.strip()
            st = os.stat(self.noodle)
            snapshot = self.w("bin", "noodle")   # the shared target/ may be rebuilt while this runs
            os.makedirs(os.path.dirname(snapshot))
            shutil.copy2(self.noodle, snapshot)
            digest = subprocess.run(["sha256sum", snapshot], capture_output=True, text=True).stdout[:12]
            self.meta["noodle"] = "%s (built %s, sha256 %s…, repo at %s when the run started)" % (
                self.noodle, time.strftime("%Y-%m-%dT%H:%M", time.localtime(st.st_mtime)), digest, commit or "?")
            self.noodle = snapshot
        else:
            log("noodle side not run (%s)" % ("--no-noodle" if self.args.no_noodle else
                                              "no binary at %s" % self.noodle))
        try:
            self.setup_inputs()
            self.check_space()
            t0 = time.time()
            self.setup_keys()
            self.nix_source()
            if self.with_noodle:
                self.noodle_source()
            self.setup_served()
            log("setup took %.0f s" % (time.time() - t0))
            os.sync()
            self.wait_after_deletion()
            self.meta["load_start"] = "%.2f" % os.getloadavg()[0]
            for op in self.args.ops:
                if op == "push":
                    self.op_push()
                elif op in ("fetch-http", "fetch-file"):
                    self.op_fetch(op)
                elif op == "export":
                    self.op_export()
                elif op == "import":
                    self.op_import()
            for name, s in self.servers.items():
                hwm = proc_hwm_kib(s.proc.pid)
                if hwm:
                    self.note("server %s peak RSS %d MiB." % (name, hwm // 1024))
        finally:
            self.meta["load_end"] = "%.2f" % os.getloadavg()[0]
            if self.raw:
                self.report()
            self.cleanup()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="timed rounds per operation (default 3)")
    ap.add_argument("--warmup", type=int, default=0, help="untimed rounds before them (default 0)")
    ap.add_argument("--ops", default=",".join(ALL_OPS),
                    help="comma-separated subset of %s (default all)" % ",".join(ALL_OPS))
    ap.add_argument("--paths", type=int, default=1,
                    help="1: the tree is one store path (default); N > 1: N part paths + a top path")
    ap.add_argument("--tree", help="another tree instead of bench/data/inputs/tree (e.g. a small one for a trial)")
    ap.add_argument("--no-noodle", action="store_true", help="Nix and tar only")
    ap.add_argument("--keep", action="store_true", help="keep bench/data/distribution/<stamp>")
    args = ap.parse_args()
    args.ops = [o for o in args.ops.split(",") if o]
    unknown = set(args.ops) - set(ALL_OPS)
    if unknown:
        die("unknown operations: %s (known: %s)" % (", ".join(sorted(unknown)), ", ".join(ALL_OPS)))
    if args.paths < 1 or args.runs < 1:
        die("--paths and --runs must be at least 1")
    if os.geteuid() != 0:
        die("run as root (Nix single-user private stores)")
    os.environ.pop("NIX_REMOTE", None)
    os.environ["LC_ALL"] = "C"
    os.makedirs(DATA, exist_ok=True)
    lock = open(os.path.join(DATA, ".lock"), "w")   # one benchmark at a time on bench/data
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        die("another benchmark holds %s" % os.path.join(DATA, ".lock"))
    Bench(args).main()


if __name__ == "__main__":
    main()
