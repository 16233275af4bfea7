#!/usr/bin/env python3
"""An unmodified PyTorch client of the co-location benchmark (scripts/bench/colocate.py).

Nothing here knows about sluice: run it under LD_PRELOAD=libsluice.so to have it scheduled.

  client.py --spec rt:vgg19:1:100:fixed --sync DIR --name rt0 --out FILE
      an inference service: requests arrive at 100/s (fixed or poisson gaps); each copies its
      input from pinned host memory, runs the model with batch 1 and copies the result back.
      Latency is from the request's arrival time to its result on the host, so a late request
      also delays the ones queued behind it (no coordinated omission).
  client.py --spec be:resnet152:32:train ...    closed-loop training (SGD, deterministic, the
      loss of every step recorded exactly)
  client.py --spec be:resnet152:32:infer ...    closed-loop large-batch inference
  client.py --spec A --spec B ... --priority    all specs as threads of one process, RT on the
      greatest-priority stream and BE on the least (the "priority streams" baseline)

Each client builds and warms up its model, writes DIR/NAME.ready and waits for DIR/go, which holds
the start time on the system-wide monotonic clock. BE runs from start to the end of the window
plus a margin; RT measures from start + --rt-delay-s for --duration-s. The JSON result has the raw
samples, so colocate.py computes every statistic and plot.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision

IMAGE = (3, 224, 224)


@dataclass
class Spec:
    role: str        # rt or be
    model: str       # a torchvision model name
    batch: int
    rate: float = 0  # RT requests per second
    arrival: str = "fixed"  # RT: fixed or poisson
    task: str = "infer"     # BE: train or infer

    @staticmethod
    def parse(text: str) -> "Spec":
        parts = text.split(":")
        try:
            if parts[0] == "rt" and len(parts) == 5:
                return Spec("rt", parts[1], int(parts[2]), rate=float(parts[3]), arrival=parts[4])
            if parts[0] == "be" and len(parts) == 4 and parts[3] in ("train", "infer"):
                return Spec("be", parts[1], int(parts[2]), task=parts[3])
        except ValueError:
            pass
        raise SystemExit(f"client.py: bad --spec '{text}' (rt:MODEL:BATCH:RATE:fixed|poisson or "
                         "be:MODEL:BATCH:train|infer)")


def deterministic(seed: int):
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True)


BUILD_LOCK = threading.Lock()  # the global RNG seeds each model's weights: one thread at a time


def build(spec: Spec, seed: int):
    with BUILD_LOCK:
        torch.manual_seed(seed)
        model = getattr(torchvision.models, spec.model)(weights=None, num_classes=1000).cuda()
    return model.train() if spec.task == "train" and spec.role == "be" else model.eval()


def wait_for_go(sync: Path, name: str) -> float:
    (sync / f"{name}.ready").write_text(str(os.getpid()))
    go = sync / "go"
    deadline = time.monotonic() + 600
    while not go.exists():
        if time.monotonic() > deadline:
            raise SystemExit("client.py: no go signal in 600 s")
        time.sleep(0.002)
    while True:
        text = go.read_text().strip()
        if text:
            return float(text)
        time.sleep(0.001)


def sleep_until(t: float):
    while (left := t - time.monotonic()) > 0:
        time.sleep(min(left, 0.0005) if left < 0.002 else left - 0.001)


def run_rt(spec: Spec, stream, args, start: float, seed: int) -> dict:
    model = build(spec, seed)
    gen = torch.Generator(device="cpu").manual_seed(seed)  # never the global RNG: BE threads seed it
    host_in = torch.randn(spec.batch, *IMAGE, generator=gen).pin_memory()
    dev_in = torch.empty(host_in.shape, device="cuda")
    host_out = torch.empty(spec.batch, 1000).pin_memory()

    def serve():
        with torch.cuda.stream(stream), torch.no_grad():
            dev_in.copy_(host_in, non_blocking=True)
            host_out.copy_(model(dev_in), non_blocking=True)
        stream.synchronize()

    for _ in range(args.warmup):
        serve()
    start = yield_ready(args, start)
    rng = random.Random(seed)
    t0 = start + args.rt_delay_s
    end = t0 + args.duration_s
    arrivals, latencies = [], []
    t = t0
    while t < end:
        sleep_until(t)
        serve()
        done = time.monotonic()
        arrivals.append(round(t - start, 6))
        latencies.append(round(done - t, 7))
        t += rng.expovariate(spec.rate) if spec.arrival == "poisson" else 1.0 / spec.rate
    return {"arrival_s": arrivals, "latency_s": latencies}


def run_be(spec: Spec, stream, args, start: float, seed: int) -> dict:
    model = build(spec, seed)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    batches = [(torch.randn(spec.batch, *IMAGE, generator=gen).cuda(),
                torch.randint(0, 1000, (spec.batch,), generator=gen).cuda()) for _ in range(4)]
    train = spec.task == "train"
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9) if train else None
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(i):
        x, y = batches[i % len(batches)]
        with torch.cuda.stream(stream):
            if train:
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model(x), y)
                loss.backward()
                opt.step()
                return loss.item()  # a training loop's per-step sync
            with torch.no_grad():
                return float(model(x)[0, 0].item())

    warmup_values = [step(i) for i in range(args.warmup)]  # library loading: not timed, but recorded
    start = yield_ready(args, start)
    end = start + args.rt_delay_s + args.duration_s + args.be_margin_s
    done_at, values = [], []
    i = args.warmup
    sleep_until(start)
    while time.monotonic() < end:
        values.append(step(i))
        done_at.append(round(time.monotonic() - start, 5))
        i += 1
    return {"done_s": done_at, "values": warmup_values + values, "warmup_steps": args.warmup}


def yield_ready(args, start):
    """The client is warm: report ready and wait for the common start (threads share one go)."""
    if start is not None:
        return start
    args.barrier.wait()
    return args.start_time


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", action="append", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--sync", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--seed", type=int, action="append", required=True, help="one per --spec")
    p.add_argument("--duration-s", type=float, default=10)
    p.add_argument("--rt-delay-s", type=float, default=1.0)
    p.add_argument("--be-margin-s", type=float, default=0.5)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--priority", action="store_true", help="RT streams greatest priority, BE least")
    args = p.parse_args()
    specs = [Spec.parse(s) for s in args.spec]
    if len(args.seed) != len(specs):
        sys.exit("client.py: give one --seed per --spec")
    deterministic(args.seed[0])
    torch.cuda.init()
    results = [None] * len(specs)
    errors = []
    # Every thread warms up, then one of them reports ready and waits for go; all start together.
    args.start_time = None

    def on_all_warm():
        args.start_time = wait_for_go(args.sync, args.name)

    args.barrier = threading.Barrier(len(specs), action=on_all_warm)

    def body(i, spec):
        try:
            prio = (-100 if spec.role == "rt" else 0) if args.priority else 0
            stream = torch.cuda.Stream(priority=prio)
            seed = args.seed[i]
            fn = run_rt if spec.role == "rt" else run_be
            results[i] = {"spec": vars(spec), "seed": seed, **fn(spec, stream, args, None, seed)}
        except BaseException as e:  # report, and release the others
            errors.append(f"{spec.role}:{spec.model}: {e!r}")
            args.barrier.abort()

    threads = [threading.Thread(target=body, args=(i, s)) for i, s in enumerate(specs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out = {"name": args.name, "pid": os.getpid(), "device": torch.cuda.get_device_name(),
           "clients": results, "errors": errors}
    args.out.write_text(json.dumps(out))
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
