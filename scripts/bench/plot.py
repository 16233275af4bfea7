#!/usr/bin/env python3
"""Draws the co-location benchmark's figures from its JSON (colocate.py's output):

  colocation_<w>_cdf.png       RT latency CDF, one line per setting
  colocation_<w>_timeline.png  RT requests' latency against time, and BE's progress, for plain MPS
                               and sluice-mps side by side (the same seconds of each run)

    plot.py bench/results/colocation_train.json [...]

Needs matplotlib; exits 3 with a message when it is missing.
"""
import json
import sys
from pathlib import Path

try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    sys.exit(print("plot.py: matplotlib is not installed (apt-get install python3-matplotlib)", file=sys.stderr) or 3)

STYLE = {"rt-alone": ("black", "-"), "timeslice": ("tab:red", "-"), "mps": ("tab:orange", "-"),
         "priority": ("tab:purple", "-"), "sluice-timeslice": ("tab:cyan", "--"), "sluice-mps": ("tab:green", "-")}


def first_round(doc):
    """The raw samples are the first round's: the title says so where there were several."""
    return f"; round 1 of {doc['rounds']}" if doc.get("rounds", 1) > 1 else ""


def cdf(doc, path):
    fig, ax = plt.subplots(figsize=(8, 5))
    for name in doc["order"]:
        res = doc["settings"][name]
        lat = sorted(x * 1000 for c in res["clients"] if c["spec"]["role"] == "rt" for x in c["latency_s"])
        if not lat:
            continue
        color, line = STYLE.get(name, (None, ":"))
        ys = [(i + 1) / len(lat) for i in range(len(lat))]
        ax.plot(lat, ys, label=name, color=color, linestyle=line, linewidth=1.6 if color else 1.0)
    ax.set_xscale("log")
    ax.set_xlabel("RT request latency (ms, request to result on the host)")
    ax.set_ylabel("fraction of requests")
    ax.axhline(0.99, color="grey", linewidth=0.5)
    ax.set_title(f"Workload {doc['workload']}: RT latency CDF ({doc['device']}{first_round(doc)})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def timeline(doc, path):
    shown = [n for n in ("mps", "sluice-mps") if n in doc["settings"]]
    if not shown:
        return
    fig, axes = plt.subplots(2, len(shown), figsize=(6 * len(shown), 6), sharex=True, squeeze=False)
    for col, name in enumerate(shown):
        res = doc["settings"][name]
        top, bottom = axes[0][col], axes[1][col]
        for c in res["clients"]:
            if c["spec"]["role"] == "rt":
                top.scatter(c["arrival_s"], [x * 1000 for x in c["latency_s"]], s=2,
                            label=f"RT {c['spec']['model']}")
            else:
                bottom.plot(c["done_s"], range(1, len(c["done_s"]) + 1), label=f"BE {c['spec']['model']}")
        top.set_yscale("log")
        top.set_ylabel("RT latency (ms)")
        top.set_title(name)
        bottom.set_ylabel("BE steps completed")
        bottom.set_xlabel("time since start (s)")
        for ax in (top, bottom):
            ax.axvspan(doc["rt_delay_s"], doc["rt_delay_s"] + doc["duration_s"], color="grey", alpha=0.08)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7, markerscale=4)
    fig.suptitle(f"Workload {doc['workload']}: RT requests and BE progress (shaded: measured window"
                 f"{first_round(doc)})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for arg in sys.argv[1:]:
        src = Path(arg)
        doc = json.loads(src.read_text())
        stem = src.with_suffix("")
        cdf(doc, f"{stem}_cdf.png")
        timeline(doc, f"{stem}_timeline.png")
        print(f"plot.py: {stem}_cdf.png, {stem}_timeline.png")


if __name__ == "__main__":
    main()
