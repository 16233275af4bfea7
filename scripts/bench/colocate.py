#!/usr/bin/env python3
"""The co-location benchmark: RT inference services next to BE jobs on one GPU, under every
setting a user could choose, in one run (so that every ratio compares figures of the same run).

    colocate.py WORKLOAD --sluice-build build/release --out bench/results

Workloads (REEF's DISB shapes, plus a training job; torchvision models with random weights):
  A      1 RT VGG-19 at 100 req/s + 1 BE ResNet-152 (inference, batch 32)
  B      the same at 220 req/s
  C      1 RT VGG-19 at 100 req/s + 5 BE of mixed models
  D      5 RT at 20 req/s each (mixed models) + the 5 BE of C
  E      D with Poisson arrivals
  train  1 RT ResNet-50 at 100 req/s + ResNet-50 training, batch 64

Settings:
  rt-alone, be-alone          each side by itself
  timeslice                   both, separate processes: the driver time-slices their contexts
  mps                         both under a plain MPS control daemon
  priority                    both as threads of one process, RT on the greatest-priority stream
  sluice-timeslice            unmodified clients under LD_PRELOAD=libsluice.so, sluiced --mode timeslice
  sluice-mps                  the same with sluiced --mps: gate, stream priority, SM partition, kill
  sluice-mps-no-<m>           sluice-mps with one mechanism off (gate, priority, partition, kill)
                              (no-gate matters only where BE is not in a partition: a partitioned
                              BE is granted an unlimited budget with the gate on too)
  sluice-mps-reserve-<N>      sluice-mps with a fixed reserve of N SMs (a multiple of 8) instead of
                              the automatic one: how much RT latency each reserve buys, and what
                              BE pays for it (not in the default list; name them in --settings)

--rounds N runs the whole list of settings N times, interleaved (so that the machine's slow spells
fall on every setting alike). Each round's ratios use that round's own alone runs; the tables give
the median of the rounds' figures, with the lowest and highest after each ratio.

Writes OUT/colocation_<workload>.json with every setting's statistics and raw samples (the first
round's), and OUT/colocation_<workload>.md. plot.py draws the figures from the JSON. Exits 77 without a GPU.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "gpu"))
from sluice_env import Mps, Sluiced  # noqa: E402

MIXED_BE = ["be:resnet152:16:infer", "be:densenet201:16:infer", "be:vgg19:16:infer",
            "be:resnet101:16:infer", "be:wide_resnet50_2:16:infer"]
MIXED_RT = ["resnet50", "vgg19", "densenet201", "mobilenet_v3_large", "resnet152"]

WORKLOADS = {
    "A": {"rt": ["rt:vgg19:1:100:fixed"], "be": ["be:resnet152:32:infer"]},
    "B": {"rt": ["rt:vgg19:1:220:fixed"], "be": ["be:resnet152:32:infer"]},
    "C": {"rt": ["rt:vgg19:1:100:fixed"], "be": MIXED_BE},
    "D": {"rt": [f"rt:{m}:1:20:fixed" for m in MIXED_RT], "be": MIXED_BE},
    "E": {"rt": [f"rt:{m}:1:20:poisson" for m in MIXED_RT], "be": MIXED_BE},
    "train": {"rt": ["rt:resnet50:1:100:fixed"], "be": ["be:resnet50:64:train"]},
}

MECHANISMS = ["gate", "priority", "partition", "kill"]
SETTINGS = (["rt-alone", "be-alone", "timeslice", "mps", "priority", "sluice-timeslice", "sluice-mps"]
            + [f"sluice-mps-no-{m}" for m in MECHANISMS] + ["rt-alone-2"])
# RT alone runs first and again last: the machine has stalls of its own (a second or so of slower
# service now and then), and the lower p99 of the two is the baseline every ratio uses.
ALONE_RT = ("rt-alone", "rt-alone-2")
RESERVE_PREFIX = "sluice-mps-reserve-"

# A request misses its deadline when it takes longer than this many times the p99 of the same RT
# client alone in the same run.
DEADLINE_FACTOR = 1.5


def known_setting(name):
    """One of SETTINGS, or a sluice-mps-reserve-N with N a positive multiple of 8."""
    if name in SETTINGS:
        return True
    n = name.removeprefix(RESERVE_PREFIX)
    return name.startswith(RESERVE_PREFIX) and n.isdigit() and int(n) > 0 and int(n) % 8 == 0


def percentile(values, q):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def bench_policy(setting, knobs=None):
    """RT clients are RT by their command line (a label can only lower a class), BE clients are
    the default; the policy's mechanism switches follow the setting, on top of `knobs` (the
    policy's scheduler section, from --scheduler)."""
    off = setting.removeprefix("sluice-mps-no-") if setting.startswith("sluice-mps-no-") else None
    scheduler = dict(knobs or {})
    if setting.startswith(RESERVE_PREFIX):
        scheduler["reserve_sms"] = int(setting.removeprefix(RESERVE_PREFIX))
    if off == "gate":
        scheduler["gate"] = False
    if off == "partition":
        scheduler["partition"] = False
    return {"version": 1, "scheduler": scheduler, "defaults": {"class": "be", "kill": off != "kill"},
            "rules": [{"name": "bench-rt", "match": {"cmdline": "*client.py --name rt*"}, "class": "rt"}]}


class Run:
    """One setting: the client processes, their common start, their results."""

    def __init__(self, args, workload, setting, work):
        self.args = args
        self.workload = workload
        self.setting = setting
        self.dir = Path(tempfile.mkdtemp(prefix=f"{setting}-", dir=work))
        self.sync = self.dir / "sync"
        self.sync.mkdir()

    def groups(self):
        """(name, specs, role) of each process."""
        rt, be = self.workload["rt"], self.workload["be"]
        if self.setting in ALONE_RT:
            be = []
        if self.setting == "be-alone":
            rt = []
        if self.setting == "priority":
            return [("all", rt + be, "mixed")]
        return ([(f"rt{i}", [s], "rt") for i, s in enumerate(rt)] +
                [(f"be{i}", [s], "be") for i, s in enumerate(be)])

    def seed(self, spec):
        """Each client keeps its seed whatever the setting: BE's losses are compared across settings."""
        for role in ("rt", "be"):
            if spec in self.workload[role]:
                return (100 if role == "rt" else 200) + self.workload[role].index(spec)
        raise ValueError(spec)

    def command(self, name, specs):
        cmd = [sys.executable, str(HERE / "client.py"), "--name", name, "--sync", str(self.sync),
               "--out", str(self.dir / f"{name}.json"),
               "--duration-s", str(self.args.duration_s), "--rt-delay-s", str(self.args.rt_delay_s)]
        for s in specs:
            cmd += ["--spec", s, "--seed", str(self.seed(s))]
        if self.setting == "priority":
            cmd.append("--priority")
        return cmd

    def execute(self, env_for):
        procs = []
        for name, specs, role in self.groups():
            log = open(self.dir / f"{name}.log", "w")
            procs.append((name, subprocess.Popen(self.command(name, specs), env=env_for(role, name),
                                                 stdout=log, stderr=subprocess.STDOUT), log))
        deadline = time.monotonic() + self.args.ready_timeout_s
        names = [n for n, _, _ in procs]
        failed = None
        while not all((self.sync / f"{n}.ready").exists() for n in names):
            dead = [n for n, p, _ in procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                failed = f"not ready: {dead or 'timeout'}"
                break
            time.sleep(0.05)
        start = time.monotonic() + 0.3
        (self.sync / "go.tmp").write_text(f"{start}\n")
        os.rename(self.sync / "go.tmp", self.sync / "go")
        return procs, start, failed

    def collect(self, procs, failed):
        limit = time.monotonic() + self.args.duration_s + self.args.rt_delay_s + 120
        clients, errors = [], []
        if failed:
            errors.append(failed)
        for name, proc, log in procs:
            try:
                proc.wait(timeout=max(1, limit - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                errors.append(f"{name}: killed after the time limit")
            log.close()
            out = self.dir / f"{name}.json"
            if out.exists():
                data = json.loads(out.read_text())
                errors += [f"{name}: {e}" for e in data["errors"]]
                clients += [dict(c, process=name, device=data["device"]) for c in data["clients"] if c]
            else:
                errors.append(f"{name}: exit {proc.returncode}: {(self.dir / f'{name}.log').read_text()[-600:]}")
        return clients, errors


def run_setting(args, workload, setting, work):
    run = Run(args, workload, setting, work)
    result = {"setting": setting}
    base = dict(os.environ)
    base.pop("CUDA_MPS_PIPE_DIRECTORY", None)
    base.pop("LD_PRELOAD", None)
    if setting in (*ALONE_RT, "be-alone", "timeslice", "priority"):
        procs, start, failed = run.execute(lambda role, name: base)
        clients, errors = run.collect(procs, failed)
    elif setting == "mps":
        with Mps(args.mps_control) as mps:
            procs, start, failed = run.execute(lambda role, name: dict(base, **{
                k: mps.env[k] for k in ("CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_LOG_DIRECTORY")}))
            clients, errors = run.collect(procs, failed)
    else:
        mps = setting.startswith("sluice-mps")
        off = setting.removeprefix("sluice-mps-no-") if setting.startswith("sluice-mps-no-") else None
        with Sluiced(args.sluice_build, mps, args.mps_control, work, policy=bench_policy(setting, args.scheduler)) as daemon:
            def env_for(role, name):
                env = daemon.env(role, run.dir / f"{name}.stats.json")
                if role == "be" and off != "kill":
                    env["SLUICE_KILL"] = "1"
                if off == "priority":
                    env["SLUICE_STREAM_PRIORITY"] = "off"
                return env
            procs, start, failed = run.execute(env_for)
            views = []
            while any(p.poll() is None for _, p, _ in procs) and len(views) < 4 and not failed:
                time.sleep(max(0.5, (args.duration_s + args.rt_delay_s) / 4))
                views.append({"status": daemon.ctl("status"), "ps": daemon.ctl("ps")})
            clients, errors = run.collect(procs, failed)
            result["daemon"] = {"views": views, "mps_servers": daemon.mps_servers(args.mps_control),
                                "log_tail": (daemon.dir / "sluiced.log").read_text()[-3000:]}
        result["shim_stats"] = {}
        for f in sorted(run.dir.glob("*.stats.json")):
            try:
                result["shim_stats"][f.name.split(".")[0]] = json.loads(f.read_text())
            except ValueError:
                result["shim_stats"][f.name.split(".")[0]] = {"unreadable": f.read_text()[-300:]}
    result["clients"] = clients
    result["errors"] = errors
    if not args.keep:
        shutil.rmtree(run.dir, ignore_errors=True)
    return result


# ---- statistics --------------------------------------------------------------------------------

def client_key(c):
    """RT and BE clients are matched across settings by role, model and their order."""
    s = c["spec"]
    return f"{s['role']}:{s['model']}:{s.get('rate') or s.get('task')}"


def summarize(args, results):
    """Adds each setting's statistics, and its ratios to RT alone, BE alone and BE under MPS."""
    alone_rt = {}
    for c in (c for name in ALONE_RT for c in results.get(name, {}).get("clients", []) if c["spec"]["role"] == "rt"):
        p99 = percentile(c["latency_s"], 0.99)
        if client_key(c) not in alone_rt or p99 < percentile(alone_rt[client_key(c)]["latency_s"], 0.99):
            alone_rt[client_key(c)] = c
    alone_be = {client_key(c): c for c in results.get("be-alone", {}).get("clients", []) if c["spec"]["role"] == "be"}
    window = (args.rt_delay_s, args.rt_delay_s + args.duration_s)

    def be_rate(c):
        return sum(window[0] <= t <= window[1] for t in c["done_s"]) / args.duration_s

    def rt_stats(c):
        lat = [x * 1000 for x in c["latency_s"]]
        return {"count": len(lat), "p50_ms": percentile(lat, 0.5), "p99_ms": percentile(lat, 0.99),
                "max_ms": max(lat) if lat else None, "mean_ms": sum(lat) / len(lat) if lat else None,
                "served_per_s": len(lat) / args.duration_s}

    for name, res in results.items():
        rts = [c for c in res["clients"] if c["spec"]["role"] == "rt"]
        bes = [c for c in res["clients"] if c["spec"]["role"] == "be"]
        per_rt, per_be = [], []
        for c in rts:
            st = rt_stats(c)
            alone = alone_rt.get(client_key(c))
            if alone:
                a = rt_stats(alone)
                st["p99_ratio"] = st["p99_ms"] / a["p99_ms"]
                st["p50_ratio"] = st["p50_ms"] / a["p50_ms"]
                st["deadline_ms"] = DEADLINE_FACTOR * a["p99_ms"]
                st["deadline_miss_rate"] = sum(x * 1000 > st["deadline_ms"] for x in c["latency_s"]) / max(1, st["count"])
                st["throughput_ratio"] = st["served_per_s"] / a["served_per_s"]
            per_rt.append(dict(st, client=client_key(c)))
        for c in bes:
            st = {"client": client_key(c), "steps_per_s": be_rate(c), "steps": len(c["done_s"])}
            alone = alone_be.get(client_key(c))
            if alone:
                st["ratio_alone"] = st["steps_per_s"] / be_rate(alone)
                st["identical_to_alone"] = identical(c, alone)
            per_be.append(st)
        all_lat = [x * 1000 for c in rts for x in c["latency_s"]]
        summary = {"rt": per_rt, "be": per_be}
        if all_lat:
            summary["rt_p50_ms"] = percentile(all_lat, 0.5)
            summary["rt_p99_ms"] = percentile(all_lat, 0.99)
            summary["rt_max_ms"] = max(all_lat)
        ratios = [r["p99_ratio"] for r in per_rt if "p99_ratio" in r]
        if ratios:
            summary["rt_p99_ratio"] = max(ratios)  # the worst RT client's
            summary["deadline_miss_rate"] = (sum(r["deadline_miss_rate"] * r["count"] for r in per_rt)
                                             / max(1, sum(r["count"] for r in per_rt)))
        if per_be:
            summary["be_steps_per_s"] = sum(b["steps_per_s"] for b in per_be)
            if all("ratio_alone" in b for b in per_be):
                summary["be_ratio_alone"] = sum(b["ratio_alone"] for b in per_be) / len(per_be)
        rt_norm = (sum(r.get("throughput_ratio", 0) for r in per_rt) / len(per_rt)) if per_rt else 0
        summary["total_throughput_norm"] = rt_norm + summary.get("be_ratio_alone", 0)
        res["summary"] = summary
    mps_be = {b["client"]: b["steps_per_s"] for b in results.get("mps", {}).get("summary", {}).get("be", [])}
    for name, res in results.items():
        s = res["summary"]
        vs = [b["steps_per_s"] / mps_be[b["client"]] for b in s["be"] if mps_be.get(b["client"])]
        if vs and len(vs) == len(s["be"]):
            s["be_vs_mps"] = sum(vs) / len(vs)


def identical(c, alone):
    """BE's recorded values (training losses, or an output element) equal BE alone's, step by step."""
    n = min(len(c["values"]), len(alone["values"]))
    same = sum(a == b for a, b in zip(c["values"][:n], alone["values"][:n]))
    return {"compared_steps": n, "identical_steps": same, "ok": n > 0 and same == n}


SCALARS = ("rt_p50_ms", "rt_p99_ms", "rt_max_ms", "rt_p99_ratio", "deadline_miss_rate", "be_steps_per_s",
           "be_ratio_alone", "be_vs_mps", "total_throughput_norm")


def median_of(dicts):
    """The median of each number the dicts share; identical_to_alone adds up across them."""
    out = dict(dicts[0])
    for key, first in dicts[0].items():
        values = [d[key] for d in dicts if isinstance(d.get(key), (int, float)) and not isinstance(d.get(key), bool)]
        if isinstance(first, (int, float)) and not isinstance(first, bool) and values:
            out[key] = statistics.median(values)
    checks = [d["identical_to_alone"] for d in dicts if "identical_to_alone" in d]
    if checks:
        out["identical_to_alone"] = {"compared_steps": sum(c["compared_steps"] for c in checks),
                                     "identical_steps": sum(c["identical_steps"] for c in checks),
                                     "ok": all(c["ok"] for c in checks)}
    return out


def combine_rounds(rounds):
    """One result per setting: the first round's (raw samples, counters, daemon views) with a
    summary that is the median of every round's, each ratio's range across rounds, and each round's
    figures under round_summaries."""
    combined = {}
    for name, first in rounds[0].items():
        runs = [r[name] for r in rounds if name in r and "summary" in r[name]]
        if len(runs) < 2:
            combined[name] = first
            continue
        sums = [run["summary"] for run in runs]
        summary = median_of(sums)
        for role in ("rt", "be"):
            per_client = [sm[role] for sm in sums]
            if all(len(c) == len(per_client[0]) for c in per_client):
                summary[role] = [median_of(list(same)) for same in zip(*per_client)]
        summary["rounds"] = len(runs)
        for key in SCALARS:
            values = [sm[key] for sm in sums if sm.get(key) is not None]
            if len(values) > 1:
                summary[f"{key}_range"] = [min(values), max(values)]
        errors = list(first["errors"])
        for i, run in enumerate(runs[1:], start=2):
            errors += [f"round {i}: {e}" for e in run["errors"]]
        combined[name] = dict(first, summary=summary, errors=errors,
                              round_summaries=[{k: sm.get(k) for k in SCALARS} for sm in sums])
    return combined


def markdown(doc):
    lines = [f"# Co-location benchmark, workload {doc['workload']}", "",
             f"{doc['device']}; {doc['date']}; {doc['duration_s']} s measured per setting"
             + (f", {doc['rounds']} rounds of every setting, interleaved; each figure is the median of the rounds', "
                "[lowest–highest] after the ratios" if doc.get("rounds", 1) > 1 else "")
             + (f"; sluice's policy scheduler section {json.dumps(doc['scheduler'])}" if doc.get("scheduler") else "")
             + ". RT alone ran first and last; ratios use the lower of its two p99s"
             + (" of the same round. " if doc.get("rounds", 1) > 1 else ". ") +
             f"RT: {', '.join(doc['spec']['rt'])}. BE: {', '.join(doc['spec']['be'])}.", "",
             "| setting | RT p50 ms | RT p99 ms | RT max ms | p99 / RT alone | deadline misses | BE steps/s | "
             "BE / alone | BE / MPS | total (norm.) | BE identical |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda v, f="{:.2f}": "–" if v is None else f.format(v)

    def ratio(s, key):
        span = s.get(f"{key}_range")
        return fmt(s.get(key)) + (f" [{span[0]:.2f}–{span[1]:.2f}]" if span else "")

    for name in doc["order"]:
        res = doc["settings"].get(name)
        if res is None:
            continue
        s = res["summary"]
        ident = [b["identical_to_alone"] for b in s["be"] if "identical_to_alone" in b]
        ident_txt = "–" if not ident or name == "be-alone" else (
            "yes" if all(i["ok"] for i in ident) else "NO") + f" ({sum(i['compared_steps'] for i in ident)} steps)"
        err = " ⚠ " + "; ".join(res["errors"])[:200] if res["errors"] else ""
        lines.append(f"| {name}{err} | {fmt(s.get('rt_p50_ms'))} | {fmt(s.get('rt_p99_ms'))} | "
                     f"{fmt(s.get('rt_max_ms'))} | {ratio(s, 'rt_p99_ratio')} | "
                     f"{fmt(s.get('deadline_miss_rate'), '{:.1%}')} | {fmt(s.get('be_steps_per_s'), '{:.1f}')} | "
                     f"{ratio(s, 'be_ratio_alone')} | {ratio(s, 'be_vs_mps')} | "
                     f"{fmt(s.get('total_throughput_norm'))} | {ident_txt} |")
    lines += ["", f"Deadline: {DEADLINE_FACTOR}× the RT client's p99 alone in the same run. p99 / RT alone is "
              "the worst RT client's. BE / alone and BE / MPS average the BE clients' ratios. Total = RT "
              "served rate / RT alone + BE / alone. BE identical: every recorded step's loss (training) or "
              "output element (inference) equals BE alone's, bit for bit.", ""]
    for name in doc["order"]:
        res = doc["settings"].get(name, {})
        stats = res.get("shim_stats")
        if stats:
            total = lambda f: sum(f(s) for s in stats.values() if "launches" in s)
            lines.append(
                f"- {name}: shim counters, all clients: {total(lambda s: s['launches'])} launches, "
                f"{total(lambda s: s['held'])} operations held, "
                f"{total(lambda s: s['routing']['routed_launches'])} launches routed to a partition "
                f"({total(lambda s: s['routing']['route_switches'])} switches), "
                f"{total(lambda s: s['priority_overrides'])} stream priorities set, "
                f"{total(lambda s: s['kill']['twin_launches'])} killable twin launches, "
                f"{total(lambda s: s['unmanaged_total'])} unmanaged calls")
        views = [v["status"] for v in res.get("daemon", {}).get("views", []) if v.get("status")]
        if views:
            seen = [(d.get("route"), d.get("partition_sms"), d.get("reserve_sms"))
                    for v in views for d in v.get("devices", [])]
            counters = views[-1].get("counters", {})
            lines.append(f"  sluiced: (route, partition SMs, reserve SMs) sampled {seen}; "
                         f"route changes {counters.get('route_changes')}, kills {counters.get('kills')}")
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workload", choices=sorted(WORKLOADS))
    p.add_argument("--sluice-build", default="build/release")
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    p.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated subset, in this order")
    p.add_argument("--duration-s", type=float, default=10)
    p.add_argument("--rounds", type=int, default=1, help="run every setting this many times, interleaved")
    p.add_argument("--scheduler", type=json.loads, default={},
                   help="JSON object: the sluice settings' policy scheduler section (docs/policy.md), "
                        "e.g. '{\"holdoff_ms\": 5}'")
    p.add_argument("--rt-delay-s", type=float, default=1.0)
    p.add_argument("--ready-timeout-s", type=float, default=180)
    p.add_argument("--mps-control", default=shutil.which("nvidia-cuda-mps-control") or "nvidia-cuda-mps-control")
    p.add_argument("--keep", action="store_true", help="keep each setting's folder (logs, raw output)")
    args = p.parse_args()
    if shutil.which("nvidia-smi") is None or subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode:
        print("colocate.py: no GPU", file=sys.stderr)
        sys.exit(77)
    if not isinstance(args.scheduler, dict):
        sys.exit(f"colocate.py: --scheduler: expected a JSON object, got {args.scheduler!r}")
    if args.rounds < 1:
        sys.exit(f"colocate.py: --rounds {args.rounds}: expected 1 or more")
    order = [s for s in args.settings.split(",") if s]
    unknown = [s for s in order if not known_setting(s)]
    if unknown:
        sys.exit(f"colocate.py: unknown settings {unknown}; known: {SETTINGS} and {RESERVE_PREFIX}N (N a multiple of 8)")
    workload = WORKLOADS[args.workload]
    work = Path(tempfile.mkdtemp(prefix="sluice-colocate-"))
    rounds = []
    began = time.monotonic()
    stem = args.out / f"colocation_{args.workload}"
    args.out.mkdir(parents=True, exist_ok=True)
    for round_no in range(1, args.rounds + 1):
        results = {}
        rounds.append(results)
        for setting in order:
            t0 = time.monotonic()
            results[setting] = run_setting(args, workload, setting, work)
            errs = results[setting]["errors"]
            print(f"[{time.monotonic() - began:6.1f} s] " + (f"round {round_no}: " if args.rounds > 1 else "")
                  + f"{setting}: {time.monotonic() - t0:.1f} s" + (f"  errors: {errs}" if errs else ""), flush=True)
            # Written after every setting: a run cut short still leaves the settings it finished.
            text = write_results(args, workload, order, rounds, began, stem)
    print(text)
    shutil.rmtree(work, ignore_errors=True)


def write_results(args, workload, order, rounds, began, stem):
    """Summarizes what ran so far into STEM.json and STEM.md; returns the Markdown."""
    for results in rounds:
        summarize(args, results)
    results = combine_rounds(rounds)
    device = next((c.get("device") for r in results.values() for c in r["clients"] if c.get("device")), None)
    doc = {"workload": args.workload, "spec": workload, "order": [s for s in order if s in results],
           "duration_s": args.duration_s, "rounds": len(rounds), "scheduler": args.scheduler, "rt_delay_s": args.rt_delay_s, "deadline_factor": DEADLINE_FACTOR,
           "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "device": device or "GPU", "wall_s": time.monotonic() - began, "settings": results}
    stem.with_suffix(".json").write_text(json.dumps(doc, indent=1))
    text = markdown(doc)
    stem.with_suffix(".md").write_text(text)
    return text


if __name__ == "__main__":
    main()
