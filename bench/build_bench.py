#!/usr/bin/env python3
"""Build benchmarks: noodle vs Nix 2.8, side by side in one run (a benchmark, never a test).

Run it through bench/build.sh (same options), as root:

  bench/build.sh                      both operations, 21 runs of (a), 30 of (b)
  bench/build.sh --ops noop --runs 25
  bench/build.sh --no-noodle          the Nix side only (automatic while `noodle build` is missing)

Env: NOODLE=path/to/noodle (default <repo>/target/release/noodle; `cargo build --release` first).

(a) noop  — sandbox overhead, end to end: one no-op build per run, nothing cached.
    noodle:  `noodle --root R --channel C build noop`; C holds pkgs/busybox (this repo's recipe,
             built once before timing) and pkgs/noop, whose [env] SEED changes every run (so the
             plan hash does) and whose script is `touch $out`.
    Nix:     `nix-build noop.nix --argstr seed S` of
             derivation { name = "noop-S"; builder = "/bin/sh"; args = ["-c" "echo > $out"]; … }
             with a fresh S every run, `--option substitute false` (the default config asks
             cache.nixos.org first: ~4.5 s of timeouts on these VMs, no build at all), as three
             variants: `nix` (sandbox = false, /nix/store), `nix-sandbox` (sandbox = true,
             sandbox-fallback = false, /bin/sh = the host's static busybox bind-mounted, /nix/store)
             and `nix-sandbox-private` (the same in a private store `--store DIR`, which builds only
             in a sandbox).
    Every run checks that a build really happened (Nix: "building '…drv'" on stderr; noodle: a
    new entry in its store directory).
(b) locked — re-resolving and checking a locked, fully built set of 100 packages, no builds:
    a generated channel of p001…p100 (each depends on busybox and up to 3 earlier ones, p100 on all
    of p001…p099), built once; then timed: `noodle … build --locked p100` (target < 100 ms).
    Nix reference: the same graph as 100 derivations in one file, built once, then `nix-build`
    of it again (evaluation + validity checks, no builds).

Tools alternate (A B C, then C B A, …) so each sees the same machine state; each cell is the
median (min–max); ratios are medians of the per-round paired ratios. Wall time is measured around
the process (perf_counter); CPU is the child's user+sys (RUSAGE_CHILDREN). Results: bench/out/build-results.md,
raw numbers bench/out/build-raw.tsv, logs bench/out/logs/build-*.log. Scratch: bench/data/build/
(deleted at the end unless --keep; the Nix paths it made in /nix/store are deleted too).
"""
import argparse
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time

import benchlib
from benchlib import cpu_children, die, log, run_timed, setup, write_results

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
OUT = os.path.join(BENCH, "out")
LOGS = os.path.join(OUT, "logs")

# The shared helpers log here.
benchlib.LOGS = LOGS
benchlib.SETUP_LOG = "build-setup.log"

NIX_COMMON = ["--no-out-link", "--option", "substitute", "false"]
NIX_SANDBOX = ["--option", "sandbox", "true", "--option", "sandbox-fallback", "false",
               "--option", "sandbox-paths", "/bin/sh=" + os.path.realpath("/bin/busybox")]




def nentries(d):
    try:
        return len(os.listdir(d))
    except FileNotFoundError:
        return 0


class Bench:
    def __init__(self, args):
        self.args = args
        self.noodle = os.environ.get("NOODLE", os.path.join(REPO, "target", "release", "noodle"))
        self.stamp = time.strftime("%Y%m%d%H%M%S")
        self.work = os.path.join(BENCH, "data", "build", self.stamp)
        self.raw = []          # (op, tool, round, wall, cpu)
        self.notes = []
        self.nix_tag = "b" + self.stamp
        self.meta = {}

    # ------------------------------------------------------------------ helpers

    def noodle_cmd(self, root, channel, *args):
        return [self.noodle, "--root", root, "--channel", channel, "build", *args]

    def noodle_usable(self):
        if self.args.no_noodle:
            return False
        if not os.access(self.noodle, os.X_OK):
            self.note("noodle binary not found at %s: Nix side only" % self.noodle)
            return False
        p = subprocess.run([self.noodle, "build", "--help"], capture_output=True)
        if p.returncode != 0:
            self.note("`%s build` is not there yet: Nix side only" % self.noodle)
            return False
        return True

    def note(self, msg):
        log("NOTE: " + msg)
        self.notes.append(msg)

    def timed(self, op, tool, rnd, argv, check=None):
        c0 = cpu_children()
        wall, rc, out, err = run_timed(argv, "build-%s-%s.log" % (op, tool))
        cpu = cpu_children() - c0
        if rc != 0:
            sys.stderr.write((out + err)[-3000:])
            die("%s/%s round %s failed (rc %d): %s" % (op, tool, rnd, rc, " ".join(argv)))
        if check is not None:
            problem = check(out, err)
            if problem:
                die("%s/%s round %s: %s" % (op, tool, rnd, problem))
        if rnd >= 0:
            self.raw.append((op, tool, rnd, wall, cpu))
            log("  %-7s %-20s #%-3d %8.1f ms  (cpu %.1f ms)" % (op, tool, rnd, wall * 1e3, cpu * 1e3))
        return out

    def alternate(self, op, tools, runs, warmup):
        """tools: list of (name, prepare(rnd) -> (argv, check)). Round r runs them in order for
        even r, reversed for odd r; negative rounds are warm-ups (not recorded)."""
        for rnd in range(-warmup, runs):
            order = tools if rnd % 2 == 0 else tools[::-1]
            for name, prepare in order:
                argv, check = prepare(rnd)
                self.timed(op, name, rnd, argv, check)

    # ------------------------------------------------------------------ channels

    def write_busybox(self, channel):
        src = os.path.join(REPO, "pkgs", "busybox", "1.35.0.toml")
        dst = os.path.join(channel, "pkgs", "busybox")
        os.makedirs(dst, exist_ok=True)
        shutil.copy(src, dst)

    @staticmethod
    def write_recipe(channel, name, deps, script, env=None):
        d = os.path.join(channel, "pkgs", name)
        os.makedirs(d, exist_ok=True)
        lines = ['name = "%s"' % name, 'version = "1.0.0"', 'description = "bench"', "",
                 "[dependencies]", 'busybox = "^1.35"']
        lines += ['%s = "^1"' % x for x in deps]
        if env:
            lines += ["", "[env]"] + ['%s = "%s"' % kv for kv in sorted(env.items())]
        lines += ["", "[build]", "script = '''", script, "'''", ""]
        tmp = os.path.join(d, ".1.0.0.toml.tmp")
        with open(tmp, "w") as fh:
            fh.write("\n".join(lines))
        os.replace(tmp, os.path.join(d, "1.0.0.toml"))

    # ------------------------------------------------------------------ (a) noop

    def op_noop(self, with_noodle):
        w = os.path.join(self.work, "noop")
        os.makedirs(w)
        nixfile = os.path.join(w, "noop.nix")
        with open(nixfile, "w") as fh:
            fh.write('{ seed }: derivation { name = "noop-${seed}"; system = "x86_64-linux"; '
                     'builder = "/bin/sh"; args = [ "-c" "echo > $out" ]; }\n')
        private = os.path.join(w, "nix-private")
        setup(["nix-store", "--store", private, "--init"], "private Nix store")
        self.probe_nix_sandbox(w)

        def built(out, err):
            return None if "building '" in err else "no build happened (nothing on stderr says so)"

        def nix(label, extra):
            def prepare(rnd):
                seed = "%s-%s-%s" % (self.nix_tag, label, "w%d" % -rnd if rnd < 0 else rnd)
                return ["nix-build", nixfile, "--argstr", "seed", seed] + NIX_COMMON + extra, built
            return prepare

        tools = [("nix", nix("n", [])), ("nix-sandbox", nix("s", NIX_SANDBOX)),
                 ("nix-sandbox-private", nix("p", NIX_SANDBOX + ["--store", private]))]

        if with_noodle:
            root, channel = os.path.join(w, "noodle-root"), os.path.join(w, "channel")
            self.write_busybox(channel)
            self.write_recipe(channel, "noop", [], "touch $out", {"SEED": "setup"})
            subprocess.run([self.noodle, "--root", root, "init"], capture_output=True)
            log("noodle: building busybox once (untimed)")
            setup(self.noodle_cmd(root, channel, "busybox"), "noodle busybox")
            store = os.path.join(root, "noodle", "store")

            def noodle_prepare(rnd):
                self.write_recipe(channel, "noop", [], "touch $out",
                                  {"SEED": "%s-%s" % (self.stamp, "w%d" % -rnd if rnd < 0 else rnd)})
                before = nentries(store)

                def check(out, err):
                    return None if nentries(store) > before else "the store did not grow: no build?"
                return self.noodle_cmd(root, channel, "noop"), check
            tools.insert(0, ("noodle", noodle_prepare))

        log("(a) noop: %d runs (+2 warm-up), alternating %s" % (self.args.runs, ", ".join(t for t, _ in tools)))
        self.alternate("noop", tools, self.args.runs, 2)

    def probe_nix_sandbox(self, w):
        """Records whether Nix's sandbox really isolates: the builder looks for the host's /usr."""
        f = os.path.join(w, "probe.nix")
        with open(f, "w") as fh:
            fh.write('{ seed }: derivation { name = "probe-${seed}"; system = "x86_64-linux"; '
                     'builder = "/bin/sh"; args = [ "-c" "if [ -e /usr/bin ]; then echo host; '
                     'else echo isolated; fi > $out; echo pid=$$ >> $out" ]; }\n')
        res = {}
        for label, extra in (("sandbox = false", []), ("sandbox = true", NIX_SANDBOX)):
            p = subprocess.run(["nix-build", f, "--argstr", "seed", "%s-%d" % (self.nix_tag, len(res))]
                               + NIX_COMMON + extra, capture_output=True, text=True)
            if p.returncode != 0:
                res[label] = "FAILED: " + p.stderr.strip().splitlines()[-1]
            else:
                with open(p.stdout.strip()) as fh:
                    res[label] = " ".join(fh.read().split())
        self.meta["nix_sandbox_probe"] = "; ".join("%s → builder saw: %s" % kv for kv in res.items())
        log("Nix sandbox probe: " + self.meta["nix_sandbox_probe"])

    # ------------------------------------------------------------------ (b) locked

    def graph(self, n=100):
        rng = random.Random(20261121)
        deps = {}
        for i in range(1, n):
            earlier = list(range(1, i))
            deps[i] = sorted(rng.sample(earlier, min(3, len(earlier))))
        deps[n] = list(range(1, n))
        return deps

    def op_locked(self, with_noodle):
        w = os.path.join(self.work, "locked")
        os.makedirs(w)
        g = self.graph()
        top = max(g)
        name = lambda i: "p%03d" % i  # noqa: E731

        nixfile = os.path.join(w, "set.nix")
        with open(nixfile, "w") as fh:
            fh.write("let\n  mk = name: deps: derivation { name = \"${name}-%s\"; "
                     "system = \"x86_64-linux\"; builder = \"/bin/sh\"; "
                     "args = [ \"-c\" \"echo ${name} ${toString deps} > $out\" ]; };\n" % self.nix_tag)
            for i in sorted(g):
                fh.write("  %s = mk \"%s\" [ %s ];\n" % (name(i), name(i), " ".join(name(d) for d in g[i])))
            fh.write("in %s\n" % name(top))
        log("Nix: building the 100-derivation set once (untimed)")
        setup(["nix-build", nixfile] + NIX_COMMON, "Nix set")

        def nix_prepare(rnd):
            def check(out, err):
                return "Nix built something" if "building '" in err else None
            return ["nix-build", nixfile] + NIX_COMMON, check
        tools = [("nix", nix_prepare)]

        if with_noodle:
            root, channel = os.path.join(w, "noodle-root"), os.path.join(w, "channel")
            self.write_busybox(channel)
            for i in sorted(g):
                ds = [name(d) for d in g[i]]
                script = 'echo "%s %s" > "$out"' % (name(i), " ".join("$" + d for d in ds))
                self.write_recipe(channel, name(i), ds, script)
            subprocess.run([self.noodle, "--root", root, "init"], capture_output=True)
            log("noodle: building the 100-package set once (untimed)")
            setup(self.noodle_cmd(root, channel, name(top)), "noodle set")
            store = os.path.join(root, "noodle", "store")

            def noodle_prepare(rnd):
                before = nentries(store)

                def check(out, err):
                    return "noodle built something" if nentries(store) != before else None
                return self.noodle_cmd(root, channel, "--locked", name(top)), check
            tools.insert(0, ("noodle", noodle_prepare))

        log("(b) locked: %d runs (+3 warm-up), alternating %s" % (self.args.runs_locked, ", ".join(t for t, _ in tools)))
        self.alternate("locked", tools, self.args.runs_locked, 3)

    # ------------------------------------------------------------------ report

    def report(self):
        data = {}
        for op, tool, rnd, wall, cpu in self.raw:
            data.setdefault((op, tool), {})[rnd] = (wall, cpu)
        with open(os.path.join(OUT, "build-raw.tsv"), "w") as fh:
            fh.write("op\ttool\tround\twall_s\tcpu_s\n")
            for r in self.raw:
                fh.write("%s\t%s\t%d\t%.6f\t%.6f\n" % r)

        def cell(op, tool):
            v = [x[0] * 1e3 for x in data.get((op, tool), {}).values()]
            if not v:
                return "n/a"
            return "%.1f ms (%.1f–%.1f)" % (statistics.median(v), min(v), max(v))

        def cpu(op, tool):
            v = [x[1] * 1e3 for x in data.get((op, tool), {}).values()]
            return "%.1f ms" % statistics.median(v) if v else "n/a"

        def ratio(op, a, b):
            da, db = data.get((op, a), {}), data.get((op, b), {})
            r = [da[k][0] / db[k][0] for k in da if k in db]
            return "%.2f" % statistics.median(r) if r else "n/a"

        L = ["# noodle build vs Nix %s — %s" % (self.meta.get("nix_version", "?"), self.meta["date"]), ""]
        L.append("Host: %s. Load average at start / end: %s / %s. noodle: %s." % (
            self.meta["host"], self.meta["load_start"], self.meta.get("load_end", "?"), self.meta["noodle"]))
        L.append("Median (min–max) wall time of the whole process; CPU = user+sys median; ratios are "
                 "medians of per-round paired ratios; tools alternate every round.")
        L.append("")
        ops = [("noop", "(a) no-op build, end to end, nothing cached (%s runs)" % self.args.runs,
                ["noodle", "nix", "nix-sandbox", "nix-sandbox-private"],
                [("noodle", "nix-sandbox"), ("noodle", "nix"), ("nix-sandbox", "nix"),
                 ("nix-sandbox-private", "nix-sandbox")]),
               ("locked", "(b) `build --locked` of a built 100-package set, no builds (%s runs; target "
                "< 100 ms)" % self.args.runs_locked, ["noodle", "nix"], [("noodle", "nix")])]
        for op, title, tools, ratios in ops:
            if not any(k[0] == op for k in data):
                continue
            L += ["## " + title, "", "| tool | wall | CPU |", "| --- | ---: | ---: |"]
            for t in tools:
                if (op, t) in data:
                    L.append("| %s | %s | %s |" % (t, cell(op, t), cpu(op, t)))
            L.append("")
            have = [(a, b) for a, b in ratios if (op, a) in data and (op, b) in data]
            if have:
                L += ["| ratio | median |", "| --- | ---: |"]
                L += ["| %s / %s | %s |" % (a, b, ratio(op, a, b)) for a, b in have]
                L.append("")
        if "nix_sandbox_probe" in self.meta:
            L.append("Nix sandbox check (a derivation looking for the host's /usr/bin): %s."
                     % self.meta["nix_sandbox_probe"])
            L.append("")
        L.append("Nix options: `%s`; sandboxed variants add `%s`." % (" ".join(NIX_COMMON), " ".join(NIX_SANDBOX)))
        write_results(L, self.notes, OUT, "build-results.md")

    # ------------------------------------------------------------------ cleanup

    def cleanup(self):
        if self.args.keep:
            log("kept %s and the Nix paths tagged %s" % (self.work, self.nix_tag))
            return
        p = subprocess.run(["nix-store", "--gc", "--print-dead"], capture_output=True, text=True)
        mine = [x for x in p.stdout.split() if self.nix_tag in x]
        if mine:
            subprocess.run(["nix-store", "--delete"] + mine, capture_output=True)
        shutil.rmtree(self.work, ignore_errors=True)
        log("deleted %s and %d Nix store paths of this run" % (self.work, len(mine)))

    def main(self):
        os.makedirs(LOGS, exist_ok=True)
        for f in os.listdir(LOGS):
            if f.startswith("build-"):
                os.remove(os.path.join(LOGS, f))
        os.makedirs(self.work)
        nixv = subprocess.run(["nix-build", "--version"], capture_output=True, text=True).stdout.split()
        self.meta.update(
            date=time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()),
            nix_version=nixv[-1] if nixv else "?",
            host="%s %s, %d CPUs" % (platform.system(), platform.release(), os.cpu_count()),
            load_start="%.2f" % os.getloadavg()[0])
        with_noodle = self.noodle_usable()
        if with_noodle:
            st = os.stat(self.noodle)
            commit = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                                    capture_output=True, text=True).stdout.strip()
            self.meta["noodle"] = "%s (built %s, repo at %s)" % (
                self.noodle, time.strftime("%Y-%m-%dT%H:%M", time.localtime(st.st_mtime)), commit or "?")
        else:
            self.meta["noodle"] = "not measured"
        ops = self.args.ops.split(",")
        try:
            if "noop" in ops:
                self.op_noop(with_noodle)
            if "locked" in ops:
                self.op_locked(with_noodle)
        finally:
            self.meta["load_end"] = "%.2f" % os.getloadavg()[0]
            if self.raw:
                self.report()
            self.cleanup()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=21, help="timed rounds of (a) (default 21)")
    ap.add_argument("--runs-locked", type=int, default=30, help="timed rounds of (b) (default 30)")
    ap.add_argument("--ops", default="noop,locked", help="noop,locked (default both)")
    ap.add_argument("--no-noodle", action="store_true", help="the Nix side only")
    ap.add_argument("--keep", action="store_true", help="keep bench/data/build/<stamp> and the Nix paths")
    args = ap.parse_args()
    if os.geteuid() != 0:
        die("run as root (Nix single-user, sandboxed builds)")
    os.environ.pop("NIX_REMOTE", None)
    os.environ["LC_ALL"] = "C"
    Bench(args).main()


if __name__ == "__main__":
    main()
