"""Writes docs/benchmarks.md and its plots from the runs `ci/bench` left in target/bench/raw.

Called by `ci/bench` (with Debian's python3 and matplotlib); reads its settings from the
BENCH_* environment variables that script exports. Two comparisons, each like for like:
shared memory (native `vader` vs kawarimi's shm) and TCP (native `ob1/tcp` vs kawarimi's TCP).
Every ratio is kawarimi ÷ native: of time for latencies (lower is better for kawarimi), of
MB/s for bandwidths (higher is better for kawarimi).
"""

import os
import re
import statistics

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

E = os.environ
work, out = E["BENCH_WORK"], E["BENCH_OUT"]
repeats = int(E["BENCH_REPEATS"])
COMPARISONS = (("shm", "shared memory", "native-shm", "kawarimi-shm"), ("tcp", "TCP", "native-tcp", "kawarimi-tcp"))
COLLECTIVES = ("allreduce", "alltoall", "bcast", "barrier")
STYLE = {
    "native-shm": dict(color="tab:blue", ls="-", marker="o", label="native Open MPI, shared memory (vader)"),
    "kawarimi-shm": dict(color="tab:orange", ls="-", marker="s", label="kawarimi, shared memory"),
    "native-tcp": dict(color="tab:blue", ls="--", marker="o", mfc="none", label="native Open MPI, TCP (ob1/tcp)"),
    "kawarimi-tcp": dict(color="tab:orange", ls="--", marker="s", mfc="none", label="kawarimi, TCP"),
}


def parse(path):
    rows = {}
    for line in open(path, errors="replace"):
        if not line.startswith("bench=") or "size=" not in line:
            continue
        kv = dict(f.split("=", 1) for f in line.split() if "=" in f)
        rows[int(kv["size"])] = kv
    return rows


def runs(name, mode):
    """Per repeat: (parsed rows, text), or None when the run failed or was skipped."""
    res = []
    for rep in range(1, repeats + 1):
        base = f"{work}/raw/{name}.{mode}.{rep}"
        if not os.path.exists(base + ".rc"):
            res.append(None)
            continue
        rc = int(open(base + ".rc").read().split()[0])
        text = open(base + ".out", errors="replace").read()
        ok = rc == 0 and ("status=ok" in text or "VERIFIED" in text)
        res.append((parse(base + ".out"), text) if ok else None)
    return res


def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def series(name, mode, key):
    """{size: median over the repeats of `key`}."""
    rs = runs(name, mode)
    sizes = sorted({s for r in rs if r for s in r[0]})
    return {s: med([float(r[0][s][key]) if r and s in r[0] else None for r in rs]) for s in sizes}


def human(n):
    for unit, f in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= f and n % f == 0:
            return f"{n // f} {unit}"
    return f"{n} B"


def fmt(v, digits=2):
    if v is None:
        return "FAILED"
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 100:
        return f"{v:.1f}"
    return f"{v:.{digits}f}"


def ratio(k, n):
    return None if k is None or n is None or n == 0 else k / n


def fr(r):
    return "—" if r is None else f"{r:.2f}×"


def failed_runs(name, modes):
    lines = []
    for mode in modes:
        bad = sum(1 for x in runs(name, mode) if x is None)
        if bad:
            lines.append(f"**{bad} of {repeats} {mode} runs failed or were skipped** (see `{work}/raw/{name}.{mode}.*`).")
    return lines


# ---- tables ---------------------------------------------------------------------------------

def time_table(name, label, note, native, kaw):
    n, k = series(name, native, "median_us"), series(name, kaw, "median_us")
    doc = [f"#### {label}", "", note, ""] + failed_runs(name, (native, kaw))
    doc += ["| size | native µs | kawarimi µs | kawarimi ÷ native (time) |", "|---:|---:|---:|---:|"]
    for s in sorted(set(n) | set(k)):
        shown = "—" if name.startswith("barrier") else human(s)
        doc.append(f"| {shown} | {fmt(n.get(s))} | {fmt(k.get(s))} | {fr(ratio(k.get(s), n.get(s)))} |")
    return doc + [""]


def bw_table(name, label, note, native, kaw):
    n, k = series(name, native, "mbps"), series(name, kaw, "mbps")
    doc = [f"#### {label}", "", note, ""] + failed_runs(name, (native, kaw))
    doc += ["| size | native MB/s | kawarimi MB/s | kawarimi ÷ native (bandwidth) |", "|---:|---:|---:|---:|"]
    for s in sorted(set(n) | set(k)):
        doc.append(f"| {human(s)} | {fmt(n.get(s))} | {fmt(k.get(s))} | {fr(ratio(k.get(s), n.get(s)))} |")
    return doc + [""]


def heat_times(mode):
    loops = []
    for r in runs("heat", mode):
        m = r and re.search(r"steps, ([0-9.]+) s: VERIFIED", r[1])
        if m:
            loops.append(float(m.group(1)))
    return med(loops)


def comparison(key, title, native, kaw):
    doc = [f"## {title}: `{native}` vs `{kaw}`", ""]
    doc += time_table("pingpong", "Ping-pong latency, 2 ranks",
                      "Half of a timed `MPI_Send`/`MPI_Recv` round trip; the median over the iterations of a run "
                      "(5 000 up to 4 KiB, down to 60 at 4 MiB), then over the repeats.", native, kaw)
    doc += bw_table("bandwidth", "Bandwidth, 2 ranks, one way",
                    "Rank 0 keeps a window of `MPI_Isend`s in flight (64 messages, fewer for large sizes so that "
                    "a window holds at most 32 MiB); rank 1 pre-posts the receives and acknowledges each window.",
                    native, kaw)
    doc += bw_table("bibw", "Bandwidth, 2 ranks, both ways at once",
                    "As above with both ranks sending and receiving a window at once; the bytes of both directions.",
                    native, kaw)
    doc += bw_table("multipair", "Bandwidth, 4 ranks, 2 pairs at once",
                    "Rank i streams to rank i + 2, both pairs at once (one way each); the sum over the pairs.",
                    native, kaw)
    for np_ in (2, 4):
        for c in COLLECTIVES:
            note = {
                "allreduce": "`MPI_Allreduce(MPI_SUM)` of doubles. Per iteration a barrier (untimed), then the call; "
                             "an iteration takes the time of the slowest rank.",
                "alltoall": "`MPI_Alltoall` of bytes; the size is the block each rank sends to each rank. Timed as "
                            "allreduce.",
                "bcast": "`MPI_Bcast` of bytes, the root rotating every iteration. Timed as allreduce.",
                "barrier": "Back-to-back `MPI_Barrier`; time per barrier of the slowest rank.",
            }[c]
            doc += time_table(f"{c}-{np_}", f"{c}, {np_} ranks", note, native, kaw)
    rma_note = ("Rank 0 holds `MPI_Win_lock_all` on a window of `MPI_Win_allocate`; one sample is {op} of the "
                "size to rank 1 then `MPI_Win_flush`, while rank 1 waits in `MPI_Barrier`.")
    doc += time_table("rma_put", "One-sided put, 2 ranks", rma_note.format(op="`MPI_Put`"), native, kaw)
    doc += time_table("rma_get", "One-sided get, 2 ranks", rma_note.format(op="`MPI_Get`"), native, kaw)
    doc += time_table("rma_fence", "One-sided fence epoch, 2 ranks",
                      "Both ranks: `MPI_Accumulate(MPI_SUM)` of the size in doubles into the other's window, then "
                      "`MPI_Win_fence`; one sample is one epoch at rank 0.", native, kaw)
    hn, hk = heat_times(native), heat_times(kaw)
    doc += ["#### The heat demo, 4 ranks", "",
            "`examples/c/heat.c`: 240 000 cells, 2 000 steps, two `MPI_Sendrecv` of one double per step and an "
            "`MPI_Allreduce` every 100 steps; the program's own timing of its loop (rank 0)."]
    doc += [""] + failed_runs("heat", (native, kaw))
    doc += ["| native s | kawarimi s | kawarimi ÷ native (time) |", "|---:|---:|---:|",
            f"| {fmt(hn, 3)} | {fmt(hk, 3)} | {fr(ratio(hk, hn))} |", ""]
    return doc


def worst_collective(c, np_, native, kaw):
    n, k = series(f"{c}-{np_}", native, "median_us"), series(f"{c}-{np_}", kaw, "median_us")
    rs = [(ratio(k.get(s), n.get(s)), s) for s in sorted(set(n) | set(k))]
    rs = [(r, s) for r, s in rs if r is not None]
    return max(rs) if rs else (None, None)


def targets():
    """Where kawarimi stands against issue 16's targets, in this run."""
    doc = ["## Targets", "",
           "The targets set for kawarimi on one host (never asserted in a timed test), with this run's ratios.",
           "", "| target | comparison | measured | met |", "|---|---|---:|---|"]

    def row(what, comp, r, ok):
        met = "—" if r is None else ("yes" if ok(r) else "**no**")
        doc.append(f"| {what} | {comp} | {fr(r)} | {met} |")

    for key, title, native, kaw in COMPARISONS:
        lat = series("pingpong", native, "median_us"), series("pingpong", kaw, "median_us")
        row("8 B latency ≤ 1.0× native", title, ratio(lat[1].get(8), lat[0].get(8)), lambda r: r <= 1.0)
        bw = series("bandwidth", native, "mbps"), series("bandwidth", kaw, "mbps")
        for s in (1 << 20, 4 << 20):
            row(f"{human(s)} bandwidth ≥ 1.0× native", title, ratio(bw[1].get(s), bw[0].get(s)), lambda r: r >= 1.0)
        for np_ in (2, 4):
            for c in COLLECTIVES:
                r, s = worst_collective(c, np_, native, kaw)
                at = "" if s is None or c == "barrier" else f" (worst at {human(s)})"
                row(f"{c}, {np_} ranks, ≤ 1.1× native at every size{at}", title, r, lambda r: r <= 1.1)
        hn, hk = heat_times(native), heat_times(kaw)
        row("heat demo loop ≤ 1.0× native", title, ratio(hk, hn), lambda r: r <= 1.0)
    doc += ["", "NPB class A at 4 ranks, the remaining target, is measured by `ci/npb-bench` into "
            "[npb.md](npb.md). Where the time of a small message goes, step by step, before and after the "
            "fast-path work: [fast-path.md](fast-path.md).", ""]
    return doc


# ---- plots ----------------------------------------------------------------------------------

def plot_lines(ax, name, key, title, ylabel):
    for mode, style in STYLE.items():
        s = {k: v for k, v in series(name, mode, key).items() if k > 0 and v is not None}
        if s:
            ax.plot(list(s), list(s.values()), **style)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_title(title)
    ax.set_xlabel("message size (bytes)")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)


def plots():
    base = os.path.splitext(out)[0]
    files = []

    fig, ax = plt.subplots(figsize=(8, 5))
    plot_lines(ax, "pingpong", "median_us", "Ping-pong one-way latency, 2 ranks (lower is better)", "µs")
    ax.legend(fontsize=8)
    files.append(f"{base}-latency.png")
    fig.tight_layout()
    fig.savefig(files[-1], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    for ax, (name, title) in zip(axes, (("bandwidth", "one way, 2 ranks"), ("bibw", "both ways, 2 ranks"),
                                        ("multipair", "2 pairs, 4 ranks"))):
        plot_lines(ax, name, "mbps", f"Bandwidth, {title} (higher is better)", "MB/s")
    axes[0].legend(fontsize=8)
    files.append(f"{base}-bandwidth.png")
    fig.tight_layout()
    fig.savefig(files[-1], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(2, 4, figsize=(20, 9))
    for row, np_ in enumerate((2, 4)):
        for col, c in enumerate(COLLECTIVES):
            ax = axes[row][col]
            if c == "barrier":
                vals = [series(f"barrier-{np_}", m, "median_us").get(0) for m in STYLE]
                ax.bar(range(len(STYLE)), [v or 0 for v in vals], color=[s["color"] for s in STYLE.values()],
                       hatch=None)
                ax.set_xticks(range(len(STYLE)), [m for m in STYLE], rotation=20, fontsize=8)
                ax.set_ylabel("µs")
                ax.set_title(f"barrier, {np_} ranks (lower is better)")
            else:
                plot_lines(ax, f"{c}-{np_}", "median_us", f"{c}, {np_} ranks (lower is better)", "µs")
    axes[0][0].legend(fontsize=7)
    files.append(f"{base}-collectives.png")
    fig.tight_layout()
    fig.savefig(files[-1], dpi=90)
    plt.close(fig)
    return [os.path.basename(f) for f in files]


# ---- the document ---------------------------------------------------------------------------

def main():
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    pictures = plots()
    fails = int(E["BENCH_FAILURES"])
    doc = [
        "# Benchmarks: kawarimi vs native Open MPI",
        "",
        "Generated by `ci/bench`; do not edit by hand, rerun it instead. What each benchmark program measures: "
        "[bench/README.md](../bench/README.md).",
        "",
        "## Run",
        "",
        f"- **Command:** `{E['BENCH_CMD']}` (repeats={repeats}, iteration scale={E['BENCH_SCALE']}; "
        f"the whole run took {E['BENCH_ELAPSED']} s)",
        f"- **Date:** {E['BENCH_DATE']}",
        f"- **Machine:** {E['BENCH_NPROC']} CPUs (`nproc`), {E['BENCH_CPU']}, {E['BENCH_KERNEL']}",
        f"- **Open MPI:** {E['BENCH_OMPI']} (Debian packages)",
        f"- **kawarimi:** git {E['BENCH_GIT']}; `libkawarimi.so` sha256 {E['BENCH_LIB_SHA']}…; {E['BENCH_ENV']}",
        f"- **Load (`/proc/loadavg`):** before `{E['BENCH_LOAD_BEFORE']}`, after `{E['BENCH_LOAD_AFTER']}`. "
        "The machine is shared, so absolute numbers move with its load; the ratios of runs made back to back are "
        "what count.",
        f"- **Launch:** `{E['BENCH_MPIRUN']} -np N MODE target/bench/<program> {E['BENCH_SCALE']}`, where MODE is "
        "nothing (`native-shm`), `--mca pml ob1 --mca btl tcp,self` (`native-tcp`), "
        "`-x LD_PRELOAD=…/libkawarimi.so -x KAWARIMI_SHM=1` (`kawarimi-shm`) or "
        "`-x LD_PRELOAD=…/libkawarimi.so -x KAWARIMI_SHM=0` (`kawarimi-tcp`). The four runs of a benchmark go back "
        f"to back, their order rotating; each is repeated {repeats} times and every number below is the median "
        "over the repeats.",
        f"- **Failures:** {'none: every run passed its own data validation' if fails == 0 else str(fails) + ' run(s) failed or were skipped; see the tables'}.",
        f"- **Cores:** the machine has {E['BENCH_NPROC']} cores, so the runs at 4 ranks are oversubscribed, "
        "natively and under kawarimi alike.",
        "",
        "## Plots",
        "",
    ] + [f"![{p}]({p})" for p in pictures] + [""]
    doc += targets()
    for key, title, native, kaw in COMPARISONS:
        doc += comparison(key, title, native, kaw)
    with open(out, "w") as f:
        f.write("\n".join(doc).rstrip() + "\n")
    print(f"bench: wrote {out} and {', '.join(pictures)}")


main()
