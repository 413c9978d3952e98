"""Helpers shared by the bench drivers (build_bench.py, profiles_bench.py): logging, running a
command with its wall time and output logged, untimed set-up steps.

Each driver sets LOGS (its log directory) and SETUP_LOG (the file its set-up output goes to)
before calling anything here."""

import os
import resource
import subprocess
import sys
import time

LOGS = None
SETUP_LOG = "setup.log"


def log(msg):
    sys.stderr.write("[%s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


def die(msg):
    log("ERROR: " + msg)
    sys.exit(1)


def clip(b, n=3000):
    return b if len(b) <= 2 * n else b[:n] + b"\n[...]\n" + b[-n:]


def run_timed(argv, logname, env=None):
    """Runs argv; returns (wall s, rc, stdout, stderr). Output (clipped) also goes to the log.
    The child is reaped: its CPU time is in RUSAGE_CHILDREN (the caller takes the delta)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
    out, err = p.communicate()
    t1 = time.perf_counter()
    shown = argv if len(argv) < 12 else argv[:10] + ["… (%d more arguments)" % (len(argv) - 10)]
    with open(os.path.join(LOGS, logname), "ab") as fh:
        fh.write(b"$ " + " ".join(shown).encode() + b"\n" + clip(out) + clip(err) + b"\n")
    return t1 - t0, p.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def cpu_children():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def setup(argv, what, env=None):
    """Untimed command; dies with the log tail on failure; returns stdout."""
    _, rc, out, err = run_timed(argv, SETUP_LOG, env)
    if rc != 0:
        sys.stderr.write((out + err)[-3000:])
        die("setup failed (%s): %s" % (what, " ".join(argv[:8])))
    return out


def write_results(lines, notes, out_dir, filename):
    """Ends a report (`Notes:` when there are any), writes it to out_dir/filename and stdout."""
    if notes:
        lines = lines + ["", "Notes: " + " ".join(notes)]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out_dir, filename), "w") as fh:
        fh.write(text)
    sys.stdout.write(text)
