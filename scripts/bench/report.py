#!/usr/bin/env python3
"""The co-location benchmark's headline table, built from the committed colocation_*.json files.

    report.py --results bench/results --readme README.md

Writes RESULTS/colocation.md (every workload, the main settings, and sluice's goals checked) and
replaces the part of README.md between the markers
    <!-- colocation-table:begin -->  and  <!-- colocation-table:end -->
with the same table. Nothing in the table is typed by hand.
"""
import argparse
import json
import sys
from pathlib import Path

BEGIN, END = "<!-- colocation-table:begin -->", "<!-- colocation-table:end -->"
SHOWN = ["rt-alone", "rt-alone-2", "be-alone", "timeslice", "mps", "priority", "sluice-timeslice", "sluice-mps"]
ORDER = ["train", "A", "B", "C", "D", "E"]
RT_GOAL, BE_GOAL = 1.05, 0.9


def fmt(v, f="{:.2f}"):
    return "–" if v is None else f.format(v)


def ratio(s, key):
    """A ratio, with its range across rounds where the run had several."""
    span = s.get(f"{key}_range")
    return fmt(s.get(key)) + (f" [{span[0]:.2f}–{span[1]:.2f}]" if span else "")


def where(docs):
    """Which device ran which workloads, and when: 'train, B on GPU X (date to date); A on GPU Y (date)'."""
    parts = []
    for device in dict.fromkeys(doc["device"] for doc in docs):
        mine = [doc for doc in docs if doc["device"] == device]
        dates = sorted(doc["date"] for doc in mine)
        when = dates[0] + (f" to {dates[-1]}" if dates[-1] != dates[0] else "")
        parts.append(f"{', '.join(doc['workload'] for doc in mine)} on {device} ({when})")
    return "; ".join(parts)


def table(docs):
    lines = ["| workload | setting | RT p99 ms | p99 / RT alone | deadline misses | BE steps/s | BE / MPS | "
             "BE losses identical |", "|---|---|---|---|---|---|---|---|"]
    verdicts = []
    for doc in docs:
        w = doc["workload"]
        for name in SHOWN:
            res = doc["settings"].get(name)
            if res is None:
                continue
            s = res["summary"]
            ident = [b["identical_to_alone"] for b in s["be"] if "identical_to_alone" in b]
            ident_txt = "–" if not ident or name == "be-alone" else ("yes" if all(i["ok"] for i in ident) else "**no**")
            lines.append(f"| {w} | {name} | {fmt(s.get('rt_p99_ms'))} | {ratio(s, 'rt_p99_ratio')} | "
                         f"{fmt(s.get('deadline_miss_rate'), '{:.1%}')} | {fmt(s.get('be_steps_per_s'), '{:.1f}')} | "
                         f"{ratio(s, 'be_vs_mps')} | {ident_txt} |")
        best = doc["settings"].get("sluice-mps", {}).get("summary", {})
        if "rt_p99_ratio" in best and "be_vs_mps" in best:
            rt_ok, be_ok = best["rt_p99_ratio"] <= RT_GOAL, best["be_vs_mps"] >= BE_GOAL
            rounds = doc.get("rounds", 1)
            verdicts.append(f"- {w}{f' (median of {rounds} rounds)' if rounds > 1 else ''}: "
                            f"sluice-mps RT p99 {best['rt_p99_ratio']:.2f}× alone "
                            f"(goal ≤ {RT_GOAL}: {'met' if rt_ok else 'not met'}), BE {best['be_vs_mps']:.2f}× MPS "
                            f"(goal ≥ {BE_GOAL}: {'met' if be_ok else 'not met'})")
    head = [f"Measured by `scripts/bench/run WORKLOAD`: {where(docs)}. Every ratio compares figures of the same run "
            "(with several rounds, "
            "the median of the rounds' ratios, [lowest–highest] after it). Per-workload tables with "
            "every setting (each sluice mechanism off in turn, BE / alone, total throughput) and the plots: "
            "`bench/results/colocation_*.md`, `*_cdf.png`, `*_timeline.png`.", ""]
    return "\n".join(head + lines + [""] + verdicts) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, default=Path("bench/results"))
    p.add_argument("--readme", type=Path)
    args = p.parse_args()
    docs = [json.loads(f.read_text()) for f in sorted(args.results.glob("colocation_*.json"))]
    docs.sort(key=lambda d: ORDER.index(d["workload"]) if d["workload"] in ORDER else len(ORDER))
    if not docs:
        sys.exit(f"report.py: no colocation_*.json in {args.results}")
    text = table(docs)
    (args.results / "colocation.md").write_text("# Co-location benchmark: headline table\n\n" + text)
    if args.readme:
        readme = args.readme.read_text()
        if BEGIN not in readme or END not in readme:
            print(f"report.py: {args.readme} has no {BEGIN} ... {END} markers; table only in "
                  f"{args.results / 'colocation.md'}", file=sys.stderr)
        else:
            before, rest = readme.split(BEGIN, 1)
            after = rest.split(END, 1)[1]
            args.readme.write_text(f"{before}{BEGIN}\n{text}{END}{after}")
    print(text)


if __name__ == "__main__":
    main()
