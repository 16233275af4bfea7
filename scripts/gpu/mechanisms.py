#!/usr/bin/env python3
"""Runs the mechanism benchmark (bench/gpu/mechanisms.cu) on a GPU machine and writes the results.

For each mode (timeslice: no MPS, contexts of different processes time-slice; mps: an MPS control
daemon this script starts and stops) and each BE block length (20 us and 1 ms), it measures the RT
client's tiny-kernel latency (p50/p99) behind a BE client in another process, and the BE client's
throughput, for each preemption mechanism alone and combined:

  none                 RT and BE on least-priority streams, BE on the full GPU
  priority             RT on the greatest-priority stream
  partition-R          BE in a green context that leaves R SMs free
  kill                 RT sets BE's device kill word (IPC handle + cuStreamWriteValue32) before
                       each launch; BE blocks check it at entry and killed kernels resume exactly once
  priority+partition-R, all (priority + partition-16 + kill)

plus RT alone, BE alone on the full GPU and in each partition size (what a reserve costs BE), and a
%smid check that a green-context stream confines BE to its partition.

With --sluice-build DIR it also runs the same two processes unmodified (no mechanism options)
under LD_PRELOAD=libsluice.so with sluiced deciding (modes sluice-timeslice and sluice-mps, the
latter with sluiced's own MPS control daemon): what sluice delivers end to end, with the shim's
counters (routed launches, priority overrides) and sluicectl's view of each run.

    python3 scripts/gpu/mechanisms.py --bin build/release/bench/gpu/mechanisms --out bench/results

Writes OUT/mechanisms.json and OUT/mechanisms.md. Exits 77 without a GPU.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sluice_env import Mps, Sluiced  # noqa: E402

BLOCKS_US = [20, 1000]
RESERVES = [8, 16, 32, 64]
PARTITION = 16  # the reserve used in combinations


def configs():
    """(name, rt options, be options) of every RT-with-BE run."""
    rows = [("none", [], []),
            ("priority", ["--priority", "high"], []),
            ("kill", ["--kill"], ["--kill"])]
    for r in RESERVES:
        rows.append((f"partition-{r}", [], ["--green", str(r)]))
    for r in (8, PARTITION, 32):
        rows.append((f"priority+partition-{r}", ["--priority", "high"], ["--green", str(r)]))
    rows.append(("priority+kill", ["--priority", "high", "--kill"], ["--kill"]))
    rows.append((f"all (priority+partition-{PARTITION}+kill)", ["--priority", "high", "--kill"],
                 ["--green", str(PARTITION), "--kill"]))
    return rows


def run_json(cmd, env, timeout=120):
    """Runs one role and returns its JSON line (or an error record)."""
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s", "cmd": cmd}
    if p.returncode == 77:
        sys.exit("mechanisms.py: no GPU")
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    if p.returncode != 0 or not lines:
        return {"error": (p.stderr.strip() or f"exit {p.returncode}")[-400:], "cmd": cmd}
    return json.loads(lines[-1])


def pair(binary, env, block_us, rt_opts, be_opts, samples, work):
    """RT and BE in two processes; BE starts first and runs until RT has its samples."""
    sync = work / f"sync-{time.monotonic_ns()}"
    be = subprocess.Popen([binary, "be", "--sync", str(sync), "--block-us", str(block_us), *be_opts],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rt = run_json([binary, "rt", "--sync", str(sync), "--samples", str(samples), *rt_opts], env)
    if "error" in rt:  # let BE finish: it waits for the stop flag
        sync.touch()
        import mmap
        with open(sync, "r+b") as f:
            f.truncate(4096)
            m = mmap.mmap(f.fileno(), 4096)
            m[8:12] = (1).to_bytes(4, "little")  # Shared::stop
            m.close()
    try:
        out, err = be.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        be.kill()
        out, err = be.communicate()
        return rt, {"error": "BE timed out"}
    lines = [l for l in out.splitlines() if l.startswith("{")]
    be_row = json.loads(lines[-1]) if be.returncode == 0 and lines else {"error": err.strip()[-400:]}
    sync.unlink(missing_ok=True)
    return rt, be_row


def measure_sluice(binary, build, mode, samples, work, log, mps_control):
    """RT and BE unmodified, under the shim, sluiced deciding."""
    res = {"runs": [], "daemon_log": None}
    with Sluiced(build, mode == "sluice-mps", mps_control, work) as daemon:
        for block in BLOCKS_US:
            stats = {role: work / f"stats-{mode}-{block}-{role}-%p.json" for role in ("rt", "be")}
            sync = work / f"sync-{time.monotonic_ns()}"
            be = subprocess.Popen([binary, "be", "--sync", str(sync), "--block-us", str(block)],
                                  env=daemon.env("be", stats["be"]), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
            # What sluicectl shows while both run, every 250 ms.
            views, done = [], threading.Event()

            def watch():
                while not done.wait(0.25):
                    views.append({"t": time.monotonic(), "status": daemon.ctl("status"), "ps": daemon.ctl("ps")})

            watcher = threading.Thread(target=watch)
            watcher.start()
            rt = run_json([binary, "rt", "--sync", str(sync), "--samples", str(samples)],
                          daemon.env("rt", stats["rt"]))
            done.set()
            watcher.join()
            view = {"during_run": views, "mps_servers": daemon.mps_servers(mps_control)}
            try:
                out, err = be.communicate(timeout=120)
                lines = [l for l in out.splitlines() if l.startswith("{")]
                be_row = json.loads(lines[-1]) if be.returncode == 0 and lines else {"error": err.strip()[-400:]}
            except subprocess.TimeoutExpired:
                be.kill()
                be_row = {"error": "BE timed out"}
            shim = {}
            for role in ("rt", "be"):
                files = sorted(work.glob(stats[role].name.replace("%p", "*")))
                shim[role] = json.loads(files[-1].read_text()) if files else None
            row = {"mode": mode, "block_us": block, "mechanism": "sluice", "rt": rt, "be": be_row,
                   "shim_stats": shim, "sluicectl": view}
            res["runs"].append(row)
            log(f"[{mode}] block {block}: rt {rt} be {be_row}")
    res["daemon_log"] = (daemon.dir / "sluiced.log").read_text()[-4000:]
    return res


def measure_mode(binary, env, mode, samples, work, log):
    res = {"rt_alone": {}, "be_alone": {}, "runs": []}
    for prio in ("high", "low"):
        res["rt_alone"][prio] = run_json([binary, "rt", "--alone", "--priority", prio,
                                          "--samples", str(samples)], env)
        log(f"[{mode}] rt alone {prio}: {res['rt_alone'][prio]}")
    for block in BLOCKS_US:
        for reserve in [0, *RESERVES]:
            opts = ["--green", str(reserve)] if reserve else []
            row = run_json([binary, "be", "--standalone-ms", "1500", "--block-us", str(block), *opts], env)
            res["be_alone"][f"{block}/{reserve}"] = row
            log(f"[{mode}] be alone block {block} reserve {reserve}: {row}")
        for name, rt_opts, be_opts in configs():
            rt, be = pair(binary, env, block, rt_opts, be_opts, samples, work)
            res["runs"].append({"mode": mode, "block_us": block, "mechanism": name, "rt": rt, "be": be})
            log(f"[{mode}] block {block} {name}: rt {rt} be {be}")
    return res


def summarize(results):
    rows = []
    for mode, res in results["modes"].items():
        if "error" in res:
            continue
        raw = results["modes"].get(mode.replace("sluice-", ""), {}) if mode.startswith("sluice-") else res
        alone = raw.get("rt_alone", {}).get("high", {})
        for run in res["runs"]:
            rt, be = run["rt"], run["be"]
            base = raw.get("be_alone", {}).get(f"{run['block_us']}/0", {})
            row = {"mode": mode, "block_us": run["block_us"], "mechanism": run["mechanism"]}
            if "error" in rt or "error" in be:
                row["error"] = rt.get("error") or be.get("error")
            else:
                row.update(rt_p50_us=rt["p50_us"], rt_p99_us=rt["p99_us"],
                           rt_p50_vs_alone=rt["p50_us"] / alone["p50_us"] if "p50_us" in alone else None,
                           rt_p99_vs_alone=rt["p99_us"] / alone["p99_us"] if "p99_us" in alone else None,
                           be_blocks_per_s=be["blocks_per_s"],
                           be_throughput_vs_alone=be["blocks_per_s"] / base["blocks_per_s"]
                           if "blocks_per_s" in base else None,
                           be_relaunches=be.get("relaunches"))
            rows.append(row)
    return rows


def markdown(results):
    out = [f"# Mechanism benchmark ({results['device']}, driver {results['driver']}, {results['date']})", "",
           "RT: a 4-block kernel at random 0.5-3 ms gaps, call-to-completion on the host; "
           f"{results['samples']} samples per row. BE: another process launching one-wave kernels "
           "(8 blocks of 256 threads per SM) of blocks that spin 20 us or 1 ms, two in flight. "
           "BE throughput: blocks completed per second relative to BE alone on the full GPU in the same mode.",
           ""]
    for mode, res in results["modes"].items():
        if "error" in res:
            out += [f"## {mode}: not measured ({res['error']})", ""]
            continue
        if mode.startswith("sluice-"):
            out += [f"## {mode}: unmodified RT and BE under libsluice.so, sluiced deciding", "",
                    f"Ratios are to RT alone and BE alone of mode {mode[7:]}.", ""]
        else:
            a = res["rt_alone"]
            out += [f"## {mode}", "",
                    f"RT alone: p50 {a['high'].get('p50_us', float('nan')):.1f} us, "
                    f"p99 {a['high'].get('p99_us', float('nan')):.1f} us (greatest priority); "
                    f"p50 {a['low'].get('p50_us', float('nan')):.1f} us (least priority).", ""]
        out += [
                "| BE block | mechanism | RT p50 us | RT p99 us | p50 / alone | p99 / alone | BE throughput | BE relaunches |",
                "|---|---|---|---|---|---|---|---|"]
        for r in (r for r in results["summary"] if r["mode"] == mode):
            if "error" in r:
                out.append(f"| {r['block_us']} us | {r['mechanism']} | error: {r['error'][:80]} | | | | | |")
                continue
            fmt = lambda v, f: (f.format(v) if v is not None else "-")
            out.append(f"| {r['block_us']} us | {r['mechanism']} | {r['rt_p50_us']:.1f} | {r['rt_p99_us']:.1f} | "
                       f"{fmt(r['rt_p50_vs_alone'], '{:.2f}x')} | {fmt(r['rt_p99_vs_alone'], '{:.2f}x')} | "
                       f"{fmt(r['be_throughput_vs_alone'], '{:.1%}')} | {r['be_relaunches']} |")
        if mode.startswith("sluice-"):
            out.append("")
            continue
        out += ["", "BE alone, by SMs reserved (what a partition costs BE):", "",
                "| BE block | reserve | BE SMs | blocks/s | vs full GPU |", "|---|---|---|---|---|"]
        for block in BLOCKS_US:
            full = res["be_alone"].get(f"{block}/0", {}).get("blocks_per_s")
            for reserve in [0, *RESERVES]:
                row = res["be_alone"].get(f"{block}/{reserve}", {})
                if "blocks_per_s" not in row:
                    out.append(f"| {block} us | {reserve} | - | error | - |")
                    continue
                sms = row["green_sms"] or row["sms"]
                out.append(f"| {block} us | {reserve} | {sms} | {row['blocks_per_s']:.0f} | "
                           f"{row['blocks_per_s'] / full:.1%} |" if full else "| - |")
        out.append("")
    if results.get("smid"):
        out += ["## Confinement (%smid)", "",
                "A full-GPU grid of 1 ms blocks on a green-context stream, with RT kernels on a full-GPU "
                "greatest-priority stream at the same time.", "",
                "| reserve | BE partition SMs | SMs BE blocks ran on | RT SMs | RT SMs shared with BE | time vs full GPU | expected | confined |",
                "|---|---|---|---|---|---|---|---|"]
        for s in results["smid"]:
            if "error" in s:
                out.append(f"| ? | error: {s['error'][:80]} | | | | | | |")
                continue
            out.append(f"| {s['reserved_sms']} | {s['green_sms']} | {s['green_distinct_sms']} | {s['rt_distinct_sms']} | "
                       f"{s['rt_sms_shared_with_be']} | {s['time_ratio']:.2f}x | {s['expected_time_ratio']:.2f}x | "
                       f"{'yes' if s['confined'] else 'NO'} |")
        out.append("")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="the mechanisms program")
    ap.add_argument("--out", default="bench/results", help="directory for mechanisms.json and .md")
    ap.add_argument("--samples", type=int, default=400)
    ap.add_argument("--modes", default="timeslice,mps")
    ap.add_argument("--mps-control", default=shutil.which("nvidia-cuda-mps-control") or "nvidia-cuda-mps-control")
    ap.add_argument("--sluice-build", help="a release build with sluiced, sluicectl and libsluice.so: "
                                           "adds the sluice-timeslice and sluice-mps modes")
    args = ap.parse_args()
    binary = str(Path(args.bin).resolve())
    probe = subprocess.run([binary, "rt", "--alone", "--samples", "5"], capture_output=True, text=True)
    if probe.returncode == 77:
        print("mechanisms.py: no GPU", file=sys.stderr)
        return 77
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True).stdout.strip().split(", ")
    results = {"what": "RT tiny-kernel latency behind a BE process, and BE throughput, per preemption mechanism",
               "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "device": smi[0] if smi else None, "driver": smi[1] if len(smi) > 1 else None,
               "samples": args.samples, "modes": {}, "smid": []}
    work = Path(tempfile.mkdtemp(prefix="sluice-mech-"))
    modes = args.modes.split(",")
    if args.sluice_build:
        modes += [f"sluice-{m}" for m in modes if not m.startswith("sluice-")]
    for mode in modes:
        try:
            if mode.startswith("sluice-"):
                results["modes"][mode] = measure_sluice(binary, args.sluice_build, mode, args.samples,
                                                        work, log, args.mps_control)
            elif mode == "mps":
                with Mps(args.mps_control) as mps:
                    results["modes"][mode] = measure_mode(binary, mps.env, mode, args.samples, work, log)
            else:
                results["modes"][mode] = measure_mode(binary, dict(os.environ), mode, args.samples, work, log)
        except (OSError, RuntimeError, subprocess.SubprocessError) as e:
            results["modes"][mode] = {"error": str(e)}
            log(f"[{mode}] {e}")
        (out / "mechanisms.partial.json").write_text(json.dumps(results, indent=2) + "\n")
    for reserve in RESERVES:
        row = run_json([binary, "smid", "--block-us", "1000", "--reserve", str(reserve)], dict(os.environ))
        results["smid"].append(row)
        log(f"smid reserve {reserve}: {row}")
    results["summary"] = summarize(results)
    (out / "mechanisms.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "mechanisms.md").write_text(markdown(results))
    shutil.rmtree(work, ignore_errors=True)
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
