#!/usr/bin/env python3
"""Runs sluiced's benchmarks on a release build and writes bench/results/scheduler_*:

  ingest     sluiced_ingest_bench: descriptors/s from 16 clients and the daemon's CPU time
  rt launch  rt_launch_bench under LD_PRELOAD=libsluice.so over the fake driver, with the gate
             open (passthrough) and with sluiced managing the process as RT; the difference of
             the p50 call times is what being managed costs an RT launch

  run_benchmarks.py --build build/release [--out bench/results]
"""

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time


def bench_json(cmd, env, repetitions):
    out = subprocess.run(cmd + ["--benchmark_format=json", f"--benchmark_repetitions={repetitions}"],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def runs(report, counter):
    return [b[counter] for b in report["benchmarks"] if b.get("run_type") == "iteration" and counter in b]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", required=True)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "..", "bench", "results"))
    parser.add_argument("--repetitions", type=int, default=5)
    args = parser.parse_args()
    build = os.path.abspath(args.build)
    bench = os.path.join(build, "scheduler", "bench")
    shim = os.path.join(build, "shim", "libsluice.so")
    fake = os.path.join(build, "fake", "libcuda.so.1")
    env = dict(os.environ, SLUICE_LOG="error")
    env.pop("LD_PRELOAD", None)
    machine = {"cpus": os.cpu_count(), "kernel": platform.release(), "load_average": os.getloadavg(),
               "build": build, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}

    # ---- ingest ------------------------------------------------------------------------------
    ingest = bench_json([os.path.join(bench, "sluiced_ingest_bench")], env, 1)
    ingest_rows = [{"name": b["name"], "descriptors_per_s": b["descriptors_per_s"],
                    "daemon_cpu_cores": b["daemon_cpu_cores"], "dropped": b["dropped_ring_full"]}
                   for b in ingest["benchmarks"]]

    # ---- RT launch overhead ------------------------------------------------------------------
    work = tempfile.mkdtemp(prefix="sluice-bench-")
    socket = os.path.join(work, "sluiced.sock")
    policy = os.path.join(work, "policy.json")
    with open(policy, "w") as f:
        json.dump({"version": 1, "rules": [{"match": {"exe": "rt_launch_bench"}, "class": "rt"}]}, f)
    env["SLUICE_SOCKET"] = socket
    daemon = subprocess.Popen([os.path.join(build, "scheduler", "sluiced"), "--gpu", "0", "--policy", policy], env=env)
    while not os.path.exists(socket):
        time.sleep(0.01)
    launch = os.path.join(bench, "rt_launch_bench")
    variants = {
        "fake_driver_alone": dict(env, SLUICE_BENCH_DRIVER=fake),
        "shim_passthrough": dict(env, LD_PRELOAD=shim, SLUICE_REAL_LIBCUDA=fake, SLUICE_GATE="open"),
        "shim_managed_rt": dict(env, LD_PRELOAD=shim, SLUICE_REAL_LIBCUDA=fake, SLUICE_GATE="daemon"),
    }
    launch_rows = {}
    # Interleave the variants so that a noisy moment of the host does not land on one of them.
    for _ in range(args.repetitions):
        for name, variant_env in variants.items():
            report = bench_json([launch], variant_env, 1)
            row = launch_rows.setdefault(name, {"p50_ns": [], "p90_ns": [], "p99_ns": []})
            for counter in row:
                row[counter] += runs(report, counter)
    daemon.send_signal(signal.SIGTERM)
    daemon.wait(timeout=10)
    summary = {name: {k: statistics.median(v) for k, v in row.items()} for name, row in launch_rows.items()}
    overhead = summary["shim_managed_rt"]["p50_ns"] - summary["shim_passthrough"]["p50_ns"]

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "scheduler_ingest.json"), "w") as f:
        json.dump({"machine": machine, "results": ingest_rows, "google_benchmark": ingest}, f, indent=2)
    with open(os.path.join(args.out, "scheduler_rt_launch.json"), "w") as f:
        json.dump({"machine": machine, "repetitions": args.repetitions, "median_of_runs": summary,
                   "runs": launch_rows, "managed_minus_passthrough_p50_ns": overhead}, f, indent=2)
    with open(os.path.join(args.out, "scheduler_benchmarks.md"), "w") as f:
        f.write("# sluiced benchmarks\n\n")
        f.write(f"Release build, {machine['cpus']} CPUs shared with other work (load average "
                f"{machine['load_average'][0]:.1f}), Linux {machine['kernel']}, {machine['date']}. "
                f"Made by `scheduler/bench/run_benchmarks.py`.\n\n")
        f.write("## Ingest: 16 clients pushing launch descriptors (target: 200k/s under one core)\n\n")
        f.write("| run | descriptors/s | sluiced CPU (cores) | dropped (ring full) |\n|---|---:|---:|---:|\n")
        for r in ingest_rows:
            f.write(f"| {r['name'].split('/iterations')[0]} | {r['descriptors_per_s']:,.0f} | "
                    f"{r['daemon_cpu_cores']:.3f} | {r['dropped']:.0f} |\n")
        f.write("\n## RT launch: cuLaunchKernel call time over the fake driver (target: managed <= passthrough + 1 us at p50)\n\n")
        f.write(f"Median over {args.repetitions} interleaved runs of 50,000 launches each.\n\n")
        f.write("| variant | p50 | p90 | p99 |\n|---|---:|---:|---:|\n")
        for name, s in summary.items():
            f.write(f"| {name} | {s['p50_ns']:.0f} ns | {s['p90_ns']:.0f} ns | {s['p99_ns']:.0f} ns |\n")
        f.write(f"\nBeing managed costs an RT launch {overhead:.0f} ns at p50 "
                f"({'within' if overhead <= 1000 else 'OVER'} the 1 us target).\n")
    print(open(os.path.join(args.out, "scheduler_benchmarks.md")).read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
