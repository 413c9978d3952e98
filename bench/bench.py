#!/usr/bin/env python3
"""Helpers for bench/run.sh (data generation and the report). Deterministic: same output every run.

  bench.py small DIR                 20,000 files, ~94 MB, under DIR/dNN/sN/fNNN
  bench.py mutate DIR                append a line to every 10th regular file (sorted, C order)
  bench.py nixchain N OUT TOPFILE    a `nix-store --export` stream of an N-path reference chain
  bench.py report RAW META OUT.md    medians and paired median ratios as a markdown table
"""
import hashlib
import json
import os
import random
import statistics
import struct
import sys


def cmd_small(root):
    rng = random.Random(20261120)
    n = 0
    for d in range(20):
        for s in range(10):
            sub = os.path.join(root, "d%02d" % d, "s%d" % s)
            os.makedirs(sub, exist_ok=True)
            for f in range(100):
                size = rng.randint(0, 9400)  # mean 4,700 B -> ~94 MB for 20,000 files
                with open(os.path.join(sub, "f%03d" % f), "wb") as fh:
                    fh.write(rng.randbytes(size))
                n += 1
    print(n)


def cmd_mutate(root):
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            p = os.path.join(dirpath, name)
            if os.path.isfile(p) and not os.path.islink(p):
                files.append(p)
    files.sort(key=lambda p: os.fsencode(p))
    changed = 0
    for i, p in enumerate(files):
        if i % 10 == 9:
            mode = os.stat(p).st_mode
            os.chmod(p, mode | 0o200)
            with open(p, "ab") as fh:
                fh.write(b"\nnoodle-bench: changed copy %d\n" % i)
            os.chmod(p, mode)
            changed += 1
    print("%d of %d regular files changed" % (changed, len(files)))


# --- Nix export stream (format of Nix 2.8 Store::exportPaths / importPaths) ---

NIX32 = "0123456789abcdfghijklmnpqrsvwxyz"


def nix32(b):
    n = (len(b) * 8 + 4) // 5
    out = []
    for i in range(n - 1, -1, -1):
        bit = i * 5
        j, k = bit // 8, bit % 8
        c = (b[j] >> k) | ((b[j + 1] << (8 - k)) if j + 1 < len(b) else 0)
        out.append(NIX32[c & 0x1F])
    return "".join(out)


def u64(n):
    return struct.pack("<Q", n)


def nstr(x):
    if isinstance(x, str):
        x = x.encode()
    return u64(len(x)) + x + b"\0" * ((8 - len(x) % 8) % 8)


def nar_dir_one_file(name, contents):
    t = [
        "nix-archive-1", "(", "type", "directory",
        "entry", "(", "name", name, "node",
        "(", "type", "regular", "contents", contents, ")",
        ")", ")",
    ]
    return b"".join(nstr(x) for x in t)


def chain_deps(i):
    """Path i references i-1 and, for even i > 2, also i/2 (1 or 2 references each)."""
    d = [i - 1] if i > 1 else []
    if i > 2 and i % 2 == 0:
        d.append(i // 2)
    return d


def cmd_nixchain(n, out, topfile):
    n = int(n)
    paths = {}
    for i in range(1, n + 1):
        h = nix32(hashlib.sha256(b"noodle-bench-chain-%d" % i).digest()[:20])
        paths[i] = "/nix/store/%s-c-%d" % (h, i)
    with open(out + ".tmp", "wb") as fh:
        for i in range(1, n + 1):  # references before referrers, as importPaths needs
            refs = [paths[j] for j in chain_deps(i)]
            fh.write(u64(1))
            fh.write(nar_dir_one_file("refs", (" ".join(refs) + "\n").encode()))
            fh.write(u64(0x4558494E))  # exportMagic "NIXE"
            fh.write(nstr(paths[i]))
            fh.write(u64(len(refs)) + b"".join(nstr(r) for r in sorted(refs)))
            fh.write(nstr(""))  # deriver
            fh.write(u64(0))  # no legacy signature
        fh.write(u64(0))
    os.rename(out + ".tmp", out)
    with open(topfile, "w") as fh:
        fh.write(paths[n] + "\n")


# --- report ---

OPS = [
    # key, label, unit, reference tool
    ("add-big", "`add`: 1 GiB file", "s", "cp"),
    ("add-tree", "`add`: real tree ({tree})", "s", "cp"),
    ("add-small", "`add`: 20,000 small files ({small})", "s", "cp"),
    ("verify", "`verify --check-contents`: store of all three ({all})", "s", "cat"),
    ("verify", "↳ same, against `b3sum` of the same files", "s", "b3sum"),
    ("closure", "`closure` / `-qR`: 2,000-path chain (hyperfine median)", "ms", None),
    ("gc", "`gc`: 2,000 unrooted paths", "s", None),
    ("optimise", "`optimise`: tree + copy with every 10th file changed ({opt})", "s", None),
]
REFNAME = {"cp": "`cp -a`", "cat": "`cat`", "b3sum": "`b3sum`"}


def cmd_report(raw, metafile, outmd):
    meta = {}
    with open(metafile) as fh:
        for line in fh:
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                meta[k] = v
    data = {}  # (op, tool) -> {run: (secs, rss_kb)}
    with open(raw) as fh:
        for line in fh:
            if line.startswith("#") or not line.strip():
                continue
            op, tool, run, secs, rss = line.rstrip("\n").split("\t")[:5]
            data.setdefault((op, tool), {})[int(run)] = (
                float(secs), int(rss) if rss not in ("", "-") else None)

    def med(op, tool, idx=0):
        v = [x[idx] for x in data.get((op, tool), {}).values() if x[idx] is not None]
        return statistics.median(v) if v else None

    def ratio(op, a, b):
        da, db = data.get((op, a), {}), data.get((op, b), {})
        r = [da[k][0] / db[k][0] for k in da if k in db and db[k][0] > 0]
        return statistics.median(r) if r else None

    def num(x, unit):
        if unit == "ms":
            return "%.1f" % (x * 1000)
        return "%.3f" % x if x < 10 else "%.2f" % x

    def fmt(x, unit):
        return "n/a" if x is None else "%s %s" % (num(x, unit), unit)

    def cell(op, tool, unit):
        v = [x[0] for x in data.get((op, tool), {}).values()]
        if not v:
            return "n/a"
        if len(v) == 1:
            return fmt(v[0], unit)
        return "%s (%s–%s)" % (fmt(statistics.median(v), unit), num(min(v), unit), num(max(v), unit))

    def fr(x):
        return "n/a" if x is None else "%.2f" % x

    lines = []
    lines.append("# noodle vs Nix %s — %s" % (meta.get("nix_version", "?"), meta.get("date", "")))
    lines.append("")
    lines.append("Host: %s; %s runs per operation, alternating noodle, nix-store, reference; "
                 "median (min–max) per tool; ratios are medians of the per-run (paired) ratios. "
                 "noodle: %s."
                 % (meta.get("host", "?"), meta.get("runs", "?"), meta.get("noodle", "?")))
    lines.append("")
    lines.append("| operation | noodle | nix-store | reference | noodle/nix | noodle/ref | nix/ref |")
    lines.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for key, label, unit, ref in OPS:
        if not any(op == key for op, _ in data):
            continue
        label = label.format(**{k: meta.get(k, "?") for k in ("tree", "small", "all", "opt")})
        refcell = "—"
        if ref:
            refcell = "%s %s" % (REFNAME[ref], cell(key, ref, unit))
        lines.append("| %s | %s | %s | %s | %s | %s | %s |" % (
            label, cell(key, "noodle", unit), cell(key, "nix", unit), refcell,
            fr(ratio(key, "noodle", "nix")),
            fr(ratio(key, "noodle", ref)) if ref else "—",
            fr(ratio(key, "nix", ref)) if ref else "—"))
    lines.append("")
    lines.append("Peak memory (max RSS, MiB, median over runs):")
    lines.append("")
    lines.append("| operation | noodle | nix-store | reference |")
    lines.append("| --- | ---: | ---: | ---: |")
    for key, label, unit, ref in OPS:
        if not any(op == key for op, _ in data) or label.startswith("↳"):
            continue
        label = label.format(**{k: meta.get(k, "?") for k in ("tree", "small", "all", "opt")})

        def mib(tool):
            x = med(key, tool, 1)
            return "n/a" if x is None else "%.0f" % (x / 1024)
        lines.append("| %s | %s | %s | %s |" % (label, mib("noodle"), mib("nix"),
                                               ("%s %s" % (REFNAME[ref], mib(ref))) if ref else "—"))
    lines.append("")
    lines.append("Data: %s" % meta.get("data", ""))
    if meta.get("notes"):
        lines.append("")
        lines.append("Notes: " + meta["notes"])
    text = "\n".join(lines) + "\n"
    with open(outmd, "w") as fh:
        fh.write(text)
    sys.stdout.write(text)


def cmd_hfmedian(path):
    with open(path) as fh:
        r = json.load(fh)["results"][0]
    print("%.6f %.4f" % (r["median"], r["user"] + r["system"]))


if __name__ == "__main__":
    cmds = {"small": cmd_small, "mutate": cmd_mutate, "nixchain": cmd_nixchain,
            "report": cmd_report, "hfmedian": cmd_hfmedian}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        sys.exit(__doc__)
    cmds[sys.argv[1]](*sys.argv[2:])
