#!/usr/bin/env python3
"""Activation benchmarks (a benchmark, never a test). Run through bench/activation.sh, as root.

Figures (the issue's targets):
  overhead   what an activation costs beyond its checks and scripts: journal writes, validation
             (closure present and intact, sizes and metadata), the switch, bookkeeping.
             Measured from the journal (BUILT -> COMMITTED, minus the time the checks ran) and as
             the wall time of the whole command, in-process (--no-detach) and detached (the
             default when stdin is not a terminal: a worker process follows). Target < 20 ms median.
               nochecks   switch between two generations whose packages declare no checks and no
                          scripts (hello; hello + busybox)
               checks     switch between crypto 1.2.3 and 1.2.5 (one required check each)
               big        switch between two generations of 1,000 one-file packages (no checks),
                          the profiles benchmark's shape (only with --big)
             Reference, same run: `nix-env --switch-generation` between two generations (a link
             switch with no checks at all), and `noodle --version` (process start-up).
  red        time from a required check going red (the end of its run) to the previous generation
             being active again (the profile link renamed back): `activate <crypto 1.3.0
             generation>` from crypto 1.2.5, which reverts. Target < 50 ms (+ the previous
             generation's activation script: none here).

Method: one private store under bench/data/activation/<stamp>/; generations built untimed; every
timed activation is checked (state COMMITTED or REVERTED as intended, the link where it should be).
Cells are median (min-max) over --runs rounds after 3 warm-up rounds. Results:
bench/out/activation-results.md, raw: bench/out/activation-raw.tsv, logs: bench/out/logs/activation-*.
"""

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time

import benchlib
from benchlib import die, log, run_timed, setup, write_results

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
OUT = os.path.join(BENCH, "out")


def median_range(values, unit="ms", digits=1):
    if not values:
        return "-"
    fmt = "%%.%df" % digits
    return "%s %s (%s-%s)" % (fmt % statistics.median(values), unit, fmt % min(values), fmt % max(values))


class Store:
    def __init__(self, noodle, root, channel):
        self.noodle, self.root, self.channel = noodle, root, channel

    def argv(self, profile, *args):
        return [self.noodle, "--root", self.root, "--channel", self.channel,
                "--profile", "/noodle/var/profiles/" + profile, *args]

    def setup(self, profile, *args):
        return setup(self.argv(profile, *args, "--window", "0", "--no-detach"), " ".join(args))

    def link(self, profile):
        target = os.readlink(os.path.join(self.root, "noodle/var/profiles", profile))
        return int(target.rsplit("-", 2)[-2])

    def db(self):
        return sqlite3.connect(os.path.join(self.root, "noodle/var/db/store.sqlite"))

    def last_activation(self):
        with self.db() as c:
            return c.execute("SELECT id, state, started_at, finished_at FROM activations "
                             "ORDER BY id DESC LIMIT 1").fetchone()

    def runs_span_us(self, activation_id):
        """Wall span covered by check and script runs (they may overlap: checks run in parallel)."""
        with self.db() as c:
            rows = c.execute("SELECT started_at, duration_us FROM activation_runs WHERE activation = ? "
                             "ORDER BY started_at", (activation_id,)).fetchall()
        span, end = 0, None
        for start, dur in rows:
            stop = start + dur
            if end is None or start >= end:
                span += dur
                end = stop
            elif stop > end:
                span += stop - end
                end = stop
        return span

    def red_to_reverted_us(self, activation_id):
        with self.db() as c:
            red = c.execute("SELECT started_at + duration_us FROM activation_runs WHERE activation = ? "
                            "AND ok = 0 AND required = 1 ORDER BY id LIMIT 1", (activation_id,)).fetchone()
            back = c.execute("SELECT at FROM activation_events WHERE activation = ? AND what = 'switched-back'",
                             (activation_id,)).fetchone()
        if not red or not back:
            return None
        return back[0] - red[0]


def timed_activation(store, profile, target, detached, expect_state, expect_link, logname):
    argv = store.argv(profile, "activate", str(target), "--window", "0",
                      "--detach" if detached else "--no-detach")
    subprocess.run(["sync"], check=False)
    wall, rc, out, err = run_timed(argv, logname)
    aid, state, started, finished = store.last_activation()
    if state != expect_state or store.link(profile) != expect_link:
        die("%s: activation #%s ended %s with the profile on %s (rc %d): %s"
            % (profile, aid, state, store.link(profile), rc, err[-2000:]))
    return wall * 1000.0, (finished - started) / 1000.0, aid


def nix_switch_reference(scratch, runs):
    """`nix-env --switch-generation` between two generations of a private profile (link only)."""
    if not shutil.which("nix-env"):
        return None
    state = os.path.join(scratch, "nix")
    env = dict(os.environ, NIX_STORE_DIR=os.path.join(state, "store"), NIX_STATE_DIR=os.path.join(state, "var"),
               NIX_LOG_DIR=os.path.join(state, "log"), NIX_CONF_DIR=os.path.join(state, "etc"))
    os.makedirs(env["NIX_CONF_DIR"], exist_ok=True)
    with open(os.path.join(env["NIX_CONF_DIR"], "nix.conf"), "w") as fh:
        fh.write("sandbox = false\nsubstitute = false\n")
    profile = os.path.join(state, "profile")
    paths = []
    for name in ("a-1.0", "b-1.0"):
        d = os.path.join(scratch, "src", name, "bin")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, name.split("-")[0]), "w") as fh:
            fh.write("#!/bin/sh\necho %s\n" % name)
        paths.append(setup(["nix-store", "--add", os.path.dirname(d)], "nix-store --add", env).strip())
    setup(["nix-env", "-p", profile, "-i", paths[0]], "nix-env -i", env)
    setup(["nix-env", "-p", profile, "-i", paths[1]], "nix-env -i", env)
    times = []
    for i in range(runs + 3):
        target = "1" if i % 2 == 0 else "2"
        wall, rc, _, err = run_timed(["nix-env", "-p", profile, "--switch-generation", target], "activation-nix.log", env)
        if rc != 0:
            die("nix-env --switch-generation: " + err[-1000:])
        if i >= 3:
            times.append(wall * 1000.0)
    return times


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--big", action="store_true", help="also the 1,000-package generations")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    noodle = os.environ.get("NOODLE", os.path.join(REPO, "target/release/noodle"))
    if not os.access(noodle, os.X_OK):
        die("no %s: run `cargo build --release` first (or set NOODLE)" % noodle)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    scratch = os.path.join(BENCH, "data/activation", stamp)
    os.makedirs(os.path.join(OUT, "logs"), exist_ok=True)
    benchlib.LOGS = os.path.join(OUT, "logs")
    benchlib.SETUP_LOG = "activation-setup.log"
    channel = os.path.join(scratch, "channel")
    shutil.copytree(os.path.join(REPO, "pkgs"), os.path.join(channel, "pkgs"))
    store = Store(noodle, os.path.join(scratch, "root"), channel)

    log("set-up: building the generations (untimed)")
    store.setup("nochecks", "install", "hello")
    store.setup("nochecks", "install", "busybox")
    store.setup("checks", "install", "crypto@1.2.3")
    store.setup("checks", "update", "crypto", "1.2.5")
    store.setup("red", "install", "crypto@1.2.5")
    out = subprocess.run(store.argv("red", "update", "crypto", "1.3.0", "--window", "0", "--no-detach"),
                         capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if out.returncode != 7:
        die("the crypto 1.3.0 generation should revert (exit 7), got %d: %s" % (out.returncode, out.stderr[-2000:]))
    if args.big:
        log("set-up: two generations of 1,000 one-file packages")
        srcs = []
        for i in range(1000):
            d = os.path.join(scratch, "tiny", "tiny%04d-1.0" % i, "bin")
            os.makedirs(d)
            with open(os.path.join(d, "tiny%04d" % i), "w") as fh:
                fh.write("#!/bin/sh\necho %d\n" % i)
            srcs.append(os.path.dirname(d))
        paths = setup([noodle, "--root", store.root, "store", "add", *srcs], "store add").split()
        store.setup("big", "install", *paths[:999])
        store.setup("big", "install", paths[999])

    rows, raw = [], ["figure\tmode\tround\twall_ms\tjournal_ms\toverhead_ms"]
    versions = [run_timed([noodle, "--version"], "activation-floor.log")[0] * 1000.0 for _ in range(args.runs + 3)][3:]

    def overhead(profile, label, targets):
        for detached in (False, True):
            walls, journals, overheads = [], [], []
            for i in range(args.runs + 3):
                target = targets[i % 2]
                wall, journal, aid = timed_activation(store, profile, target, detached, "COMMITTED", target,
                                                      "activation-%s.log" % profile)
                excl = journal - store.runs_span_us(aid) / 1000.0
                if i >= 3:
                    walls.append(wall)
                    journals.append(journal)
                    overheads.append(excl)
                    raw.append("%s\t%s\t%d\t%.3f\t%.3f\t%.3f" % (label, "detached" if detached else "in-process",
                                                                 i - 3, wall, journal, excl))
            rows.append((label, "detached" if detached else "in-process", walls, journals, overheads))
            log("%s (%s): overhead %s, wall %s" % (label, "detached" if detached else "in-process",
                                                   median_range(overheads), median_range(walls)))

    overhead("nochecks", "no checks (hello; hello + busybox)", [1, 2])
    overhead("checks", "one required check (crypto 1.2.3 / 1.2.5)", [1, 2])
    if args.big:
        overhead("big", "1,000 packages, no checks", [1, 2])

    reds = []
    for i in range(args.runs + 3):
        wall, journal, aid = timed_activation(store, "red", 2, False, "REVERTED", 1, "activation-red.log")
        us = store.red_to_reverted_us(aid)
        if us is None:
            die("activation #%d has no red run or no switch back" % aid)
        if i >= 3:
            reds.append(us / 1000.0)
            raw.append("red-to-reverted\tin-process\t%d\t%.3f\t%.3f\t%.3f" % (i - 3, wall, journal, us / 1000.0))
    log("red -> reverted: %s" % median_range(reds, digits=2))
    nix = nix_switch_reference(scratch, args.runs)

    lines = ["# Activation figures (bench/activation.sh, %s UTC)" % time.strftime("%Y-%m-%d %H:%MZ", time.gmtime()), "",
             "noodle %s; %d rounds after 3 warm-up; median (min-max)." % (
                 subprocess.run([noodle, "--version"], capture_output=True, text=True).stdout.strip(), args.runs), "",
             "| figure | mode | overhead (journal minus checks) | journal BUILT->end | wall of the command | target | met? |",
             "| --- | --- | ---: | ---: | ---: | --- | --- |"]
    for label, mode, walls, journals, overheads in rows:
        met = "yes" if statistics.median(overheads) < 20 else "**no**"
        lines.append("| %s | %s | %s | %s | %s | < 20 ms | %s |" % (label, mode, median_range(overheads),
                                                                    median_range(journals), median_range(walls), met))
    lines.append("| red required check -> previous generation active | in-process | %s | | | < 50 ms | %s |"
                 % (median_range(reds, digits=2), "yes" if statistics.median(reds) < 50 else "**no**"))
    lines.append("| reference: `noodle --version` (start-up) | | | | %s | | |" % median_range(versions))
    if nix:
        lines.append("| reference: `nix-env --switch-generation` (a link switch, no checks) | | | | %s | | |"
                     % median_range(nix))
    with open(os.path.join(OUT, "activation-raw.tsv"), "w") as fh:
        fh.write("\n".join(raw) + "\n")
    notes = ["Overhead = the journal's BUILT->COMMITTED time minus the wall span of the check and script runs;",
             "wall = the whole command, including process start-up, opening the store and, detached, starting",
             "and following the worker process."]
    write_results(lines, notes, OUT, "activation-results.md")
    if not args.keep:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
