#!/usr/bin/env python3
"""Small PyTorch clients for scripts/demo on a real GPU. They print the same JSON as sluice-loadgen,
so scenario.py reports both alike.

  torch_client.py rt --period-us 5000 --duration-s 3 [--kernel-us K] [--out FILE]
      a small matmul every period; latency from before the launch to completion (host clock), and
      between CUDA events around the kernel. wait = latency - K, where K is the kernel's time alone
      (measured here first when not given).
  torch_client.py be --depth 8 --duration-s 4 [--size 8192] [--out FILE]
      large matmuls, `depth` in flight at a time; counts completions.

Nothing here knows about sluice: run it under LD_PRELOAD=libsluice.so to have it scheduled.
"""

import argparse
import json
import math
import os
import time

import torch


def percentiles(values):
    if not values:
        return {"count": 0}
    values = sorted(values)
    at = lambda q: values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]
    return {"count": len(values), "p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": values[-1],
            "mean": sum(values) / len(values)}


def run_rt(args):
    stream = torch.cuda.Stream()
    a = torch.randn(args.size, args.size, device="cuda", dtype=torch.float16)
    b = torch.randn(args.size, args.size, device="cuda", dtype=torch.float16)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def launch():
        with torch.cuda.stream(stream):
            start.record(stream)
            torch.mm(a, b)
            end.record(stream)

    kernel_us = args.kernel_us
    if kernel_us is None:  # alone, before measuring
        samples = []
        for _ in range(50):
            launch()
            end.synchronize()
            samples.append(start.elapsed_time(end) * 1000)
        kernel_us = sorted(samples)[len(samples) // 2]
    latency, wait, event, device_wait = [], [], [], []
    begin = time.perf_counter_ns()
    stop = begin + int(args.duration_s * 1e9)
    i = 0
    while time.perf_counter_ns() < stop:
        target = begin + i * int(args.period_us * 1000)
        while (left_ns := target - time.perf_counter_ns()) > 0:
            time.sleep(min(left_ns / 1e9, 0.0005))
        t0 = time.perf_counter_ns()
        launch()
        end.synchronize()
        t1 = time.perf_counter_ns()
        i += 1
        if i <= args.warmup:
            continue
        us = (t1 - t0) / 1000
        ev = start.elapsed_time(end) * 1000
        latency.append(us)
        wait.append(max(0.0, us - kernel_us))
        event.append(ev)
        device_wait.append(max(0.0, ev - kernel_us))
    return {"role": "rt", "kernel_us": kernel_us, "period_us": args.period_us, "latency_us": percentiles(latency),
            "wait_us": percentiles(wait), "event_us": percentiles(event), "device_wait_us": percentiles(device_wait)}


def run_be(args):
    stream = torch.cuda.Stream()
    x = torch.randn(args.size, args.size, device="cuda", dtype=torch.float16)
    events = [torch.cuda.Event(enable_timing=False) for _ in range(args.depth)]
    timing = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    samples = []
    with torch.cuda.stream(stream):
        for i in range(8):  # the first runs load cuBLAS and its kernels: not counted
            timing[0].record(stream)
            torch.mm(x, x)
            timing[1].record(stream)
            timing[1].synchronize()
            if i >= 3:
                samples.append(timing[0].elapsed_time(timing[1]) * 1000)
    kernel_us = sorted(samples)[len(samples) // 2]
    launched = completed = 0
    begin = time.perf_counter_ns()
    stop = begin + int(args.duration_s * 1e9)
    with torch.cuda.stream(stream):
        while time.perf_counter_ns() < stop:
            if launched - completed == args.depth:
                events[completed % args.depth].synchronize()
                completed += 1
                continue
            torch.mm(x, x)
            events[launched % args.depth].record(stream)
            launched += 1
    window_s = (time.perf_counter_ns() - begin) / 1e9
    stream.synchronize()
    return {"role": "be", "kernel_us": kernel_us, "depth": args.depth, "completed": completed,
            "kernels_per_s": completed / window_s, "gpu_ms_per_s": completed * kernel_us / 1000 / window_s}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("role", choices=("rt", "be"))
    parser.add_argument("--period-us", type=float, default=5000)
    parser.add_argument("--duration-s", type=float, default=3)
    parser.add_argument("--kernel-us", type=float)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--size", type=int)
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.size is None:
        args.size = 256 if args.role == "rt" else 8192
    torch.cuda.init()
    result = run_rt(args) if args.role == "rt" else run_be(args)
    result["pid"] = os.getpid()
    result["device"] = torch.cuda.get_device_name()
    text = json.dumps(result)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
