#!/usr/bin/env python3
"""Checks that real frameworks compute bit-identical results through libsluice.so.

Runs each workload in a fresh process, several times:
  baseline    without the shim
  baseline2   without the shim again (proves the workload itself is deterministic)
  open        LD_PRELOAD=libsluice.so, gate open
  toggle      LD_PRELOAD=libsluice.so, gate shut and reopened every few milliseconds
  route       the same, and every second period all work moves to a green context of --route-sms SMs
              and back (the ordering edges of every route change)
  kill        gate toggling, and SLUICE_KILL=1 with no duration threshold: every repeated best-effort
              kernel that has PTX runs as its kill-instrumented twin (twin, wait on the kill word,
              twin); the kill word is never raised here, so this checks what twins compute
  daemon-kill the same twins with sluiced (timeslice mode) deciding: an RT process pings the GPU
              every millisecond or so, and each ping that finds best-effort work in flight raises the
              workload's kill word through the daemon, so twins really stop early and their
              remaining blocks run when the word is lowered again
and compares every output (loss values, logits, arrays) bit for bit with the baseline. It also reads
the shim's statistics file (SLUICE_STATS_FILE) to report how many launches, copies and module loads
sluice saw and how many calls went through unmanaged launch paths.

    python3 scripts/gpu/check_frameworks.py --shim build/release/shim/libsluice.so --out DIR

Writes DIR/frameworks.json and DIR/frameworks.md (--report-name changes the name). Run on a GPU machine; exits 77 without a GPU.
A single workload runs with `--worker CASE --dump FILE` (used internally).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

CASES = ["resnet50", "torch_compile", "cuda_graph", "jax_jit", "cupy_kernel", "triton_loop", "cuda_extension"]
DEFAULT_CASES = [*CASES[:5], "cuda_extension"]


# ---- workloads (each returns {name: numpy array}) -------------------------------------------------

def _torch_deterministic():
    import torch
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True)
    return torch


def case_resnet50():
    torch = _torch_deterministic()
    import torchvision
    model = torchvision.models.resnet50(num_classes=100).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    gen = torch.Generator(device="cpu").manual_seed(1)
    images = torch.randn(16, 3, 224, 224, generator=gen).cuda()
    labels = torch.randint(0, 100, (16,), generator=gen).cuda()
    losses = []
    model.train()
    for _ in range(20):
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    model.eval()
    with torch.no_grad():
        logits = model(images[:8])
    return {"losses": torch.stack(losses).cpu().numpy(), "logits": logits.cpu().numpy()}


def case_torch_compile():
    torch = _torch_deterministic()
    torch.use_deterministic_algorithms(False)  # inductor's reductions are deterministic per config

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 16, 3, padding=1)
            self.norm = torch.nn.LayerNorm([16, 32, 32])
            self.fc = torch.nn.Linear(16 * 32 * 32, 10)

        def forward(self, x):
            return self.fc(torch.nn.functional.gelu(self.norm(self.conv(x))).flatten(1))

    model = Net().cuda()
    compiled = torch.compile(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator(device="cpu").manual_seed(2)
    x = torch.randn(32, 3, 32, 32, generator=gen).cuda()
    y = torch.randint(0, 10, (32,), generator=gen).cuda()
    losses = []
    for _ in range(5):
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(compiled(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    with torch.no_grad():
        out = compiled(x)
    return {"losses": torch.stack(losses).cpu().numpy(), "out": out.cpu().numpy()}


def case_triton_loop():
    """Many Triton kernels of tens of microseconds each (inductor's fused normalization and
    activation over 16M elements, applied SLUICE_CHECK_TRITON_STEPS times, 400 by default). 400
    steps are only about 20 ms of GPU time, which few RT arrivals find in flight; daemon-kill wants
    tens of thousands."""
    torch = _torch_deterministic()
    torch.use_deterministic_algorithms(False)

    @torch.compile
    def step(x, w):
        return torch.nn.functional.gelu(torch.nn.functional.layer_norm(x, x.shape[-1:]) * w) + 0.5 * x

    gen = torch.Generator(device="cpu").manual_seed(5)
    x = torch.randn(4096, 4096, generator=gen).cuda()
    w = torch.randn(4096, generator=gen).cuda()
    sums = []
    steps = int(os.environ.get("SLUICE_CHECK_TRITON_STEPS", "400"))
    for i in range(steps):
        x = step(x, w)
        if i % 50 == 49:
            sums.append(x.sum())
    return {"x": x[:64].cpu().numpy(), "sums": torch.stack(sums).cpu().numpy()}


def case_cuda_extension():
    """An nvcc-built extension library (tests/gpu/shim/check_extension.cu: sm_90 code, compute_90
    PTX, the static CUDA runtime), loaded with ctypes: the runtime registers its fatbin and launches
    its kernels, SLUICE_CHECK_TRITON_STEPS in-place steps over 4M floats. SLUICE_CHECK_EXTENSION
    names the library."""
    import ctypes
    import numpy as np
    lib = ctypes.CDLL(os.environ["SLUICE_CHECK_EXTENSION"])
    steps = int(os.environ.get("SLUICE_CHECK_TRITON_STEPS", "400"))
    head = np.zeros(4096, np.float32)
    sums = np.zeros(max(1, steps // 50) * 1024, np.float32)
    pointer = ctypes.POINTER(ctypes.c_float)
    status = lib.sluice_check_extension_run(steps, head.ctypes.data_as(pointer), head.size,
                                            sums.ctypes.data_as(pointer), sums.size)
    if status != 0:
        raise RuntimeError(f"sluice_check_extension_run: CUDA runtime error {status}")
    return {"head": head, "sums": sums}


def run_pinger(stop: str) -> None:
    """The RT side of daemon-kill: a tiny kernel, wait for it, idle about a millisecond, again."""
    import random
    import torch
    x = torch.ones(1024, device="cuda")
    torch.cuda.synchronize()
    Path(stop + ".ready").write_text("ready\n")
    rng = random.Random(6)
    pings = 0
    while not Path(stop).exists():
        (x * 2).sum().item()
        pings += 1
        time.sleep(rng.uniform(0.0005, 0.002))
    Path(stop + ".pings").write_text(f"{pings}\n")


def case_cuda_graph():
    torch = _torch_deterministic()
    model = torch.nn.Sequential(torch.nn.Linear(512, 1024), torch.nn.ReLU(),
                                torch.nn.Linear(1024, 512)).cuda().eval()
    static_in = torch.zeros(64, 512, device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), torch.no_grad():
        for _ in range(3):
            model(static_in)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.no_grad():
        static_out = model(static_in)
    gen = torch.Generator(device="cpu").manual_seed(3)
    outs = []
    for _ in range(10):
        static_in.copy_(torch.randn(64, 512, generator=gen))
        graph.replay()
        outs.append(static_out.clone())
    return {"replays": torch.stack(outs).cpu().numpy()}


def case_jax_jit():
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_gpu_deterministic_ops=true"
    import jax
    import jax.numpy as jnp

    @jax.jit
    def step(w, x):
        h = jnp.tanh(x @ w)
        return h, jnp.sum(h * h, axis=1), jax.nn.softmax(h, axis=-1)

    key = jax.random.PRNGKey(0)
    w = jax.random.normal(key, (512, 512))
    x = jax.random.normal(jax.random.PRNGKey(1), (256, 512))
    h, sq, sm = step(w, x)
    grad = jax.jit(jax.grad(lambda w: jnp.sum(step(w, x)[1])))(w)
    import numpy as np
    return {"h": np.asarray(h), "sq": np.asarray(sq), "sm": np.asarray(sm), "grad": np.asarray(grad)}


def case_cupy_kernel():
    import cupy as cp
    saxpy = cp.RawKernel(r'''
    extern "C" __global__ void saxpy(float a, const float* x, float* y, int n) {
      int i = blockIdx.x * blockDim.x + threadIdx.x;
      if (i < n) y[i] = a * x[i] + y[i];
    }''', "saxpy")
    n = 1 << 20
    rng = cp.random.RandomState(4)
    x = rng.standard_normal(n, dtype=cp.float32)
    y = rng.standard_normal(n, dtype=cp.float32)
    saxpy(((n + 255) // 256,), (256,), (cp.float32(1.5), x, y, cp.int32(n)))
    poly = cp.ElementwiseKernel("float32 a", "float32 b", "b = a * a * 0.5f - a", "sluice_poly")
    z = poly(y)
    return {"y": cp.asnumpy(y), "z": cp.asnumpy(z), "sum": cp.asnumpy(z.sum()),
            "sorted": cp.asnumpy(cp.sort(z)[:1024])}


def run_worker(case: str, dump: str) -> None:
    import numpy as np
    outputs = globals()[f"case_{case}"]()
    np.savez(dump, **{k: np.ascontiguousarray(v) for k, v in outputs.items()})


# ---- driver -----------------------------------------------------------------------------------------

def digest(path: Path) -> dict:
    import numpy as np
    with np.load(path) as data:
        return {k: hashlib.sha256(data[k].tobytes() + str(data[k].dtype).encode() +
                                  str(data[k].shape).encode()).hexdigest() for k in sorted(data.files)}


def run_case(case: str, mode: str, shim: str, work: Path, toggle_ms: int, route_sms: int,
             cupy_ptx: bool = False) -> dict:
    if mode == "daemon-kill":
        return run_daemon_kill(case, shim, work, cupy_ptx)
    return run_worker_process(case, mode, work, worker_env(case, mode, shim, work, toggle_ms, route_sms, cupy_ptx))


def worker_env(case: str, mode: str, shim: str, work: Path, toggle_ms: int, route_sms: int,
               cupy_ptx: bool, base: dict | None = None) -> dict:
    stats = work / f"{case}.{mode}.stats.json"
    env = dict(base or os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["SLUICE_CHECK_EXTENSION"] = str(Path(shim).parent.parent / "tests/gpu/shim/libsluice_check_extension.so")
    env["TORCHINDUCTOR_CACHE_DIR"] = str(work / "inductor")
    env["TRITON_CACHE_DIR"] = str(work / "triton")
    env["CUPY_CACHE_DIR"] = str(work / ("cupy-ptx" if cupy_ptx else "cupy"))
    if cupy_ptx:  # CuPy hands the driver PTX (which sluice can instrument) instead of cubins
        env["CUPY_COMPILE_WITH_PTX"] = "1"
    if mode in ("open", "toggle", "route", "kill", "daemon-kill"):
        env["LD_PRELOAD"] = shim
        env["SLUICE_STATS_FILE"] = str(stats)
    if mode in ("open", "toggle", "route", "kill"):
        env["SLUICE_GATE"] = {"open": "open", "toggle": f"toggle:{toggle_ms}", "kill": f"toggle:{toggle_ms}",
                              "route": f"toggle:{toggle_ms}:{route_sms}"}[mode]
    if mode in ("kill", "daemon-kill"):
        env.update(SLUICE_KILL="1", SLUICE_KILL_MIN_US="0", XDG_CACHE_HOME=str(work / "cache"))
    return env


def run_worker_process(case: str, mode: str, work: Path, env: dict) -> dict:
    dump = work / f"{case}.{mode}.npz"
    stats = work / f"{case}.{mode}.stats.json"
    start = time.monotonic()
    proc = subprocess.run([sys.executable, __file__, "--worker", case, "--dump", str(dump)],
                          env=env, capture_output=True, text=True, timeout=600)
    result = {"mode": mode, "seconds": round(time.monotonic() - start, 1), "rc": proc.returncode}
    if proc.returncode != 0:
        result["error"] = (proc.stderr or proc.stdout)[-3000:]
        return result
    result["digest"] = digest(dump)
    if stats.exists():
        result["stats"] = json.loads(stats.read_text())
    shim_lines = [line for line in proc.stderr.splitlines() if line.startswith("sluice[")]
    if shim_lines:
        result["shim_log"] = shim_lines[:20]
    return result


# The daemon kills best-effort work whenever RT arrives to find any of it in flight (a budget of
# 1 us), the gate opens as soon as RT is idle (no holdoff: BE refills the GPU between pings, so
# pings find it there), and the pinger's command line makes it RT.
DAEMON_KILL_POLICY = {
    "version": 1, "scheduler": {"be_budget_us": 1, "holdoff_ms": 0}, "defaults": {"class": "be", "kill": True},
    "rules": [{"name": "pinger", "match": {"cmdline": "*check_frameworks.py --pinger*"}, "class": "rt"}]}


def run_daemon_kill(case: str, shim: str, work: Path, cupy_ptx: bool) -> dict:
    """The workload as a BE client of sluiced, next to the RT pinger; the daemon's kill count and
    the pinger's pings come back with the run."""
    from sluice_env import Sluiced
    build = Path(shim).parent.parent
    stop = work / f"{case}.pinger.stop"
    for f in (stop, Path(f"{stop}.ready"), Path(f"{stop}.pings")):
        f.unlink(missing_ok=True)
    with Sluiced(build, False, None, work, policy=DAEMON_KILL_POLICY) as daemon:
        pinger_env = daemon.env("rt", work / f"{case}.pinger.stats.json")
        pinger = subprocess.Popen([sys.executable, __file__, "--pinger", str(stop)], env=pinger_env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not Path(f"{stop}.ready").exists() and pinger.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if not Path(f"{stop}.ready").exists():
            pinger.kill()
            return {"mode": "daemon-kill", "rc": -1, "error": f"the RT pinger did not start: {pinger.communicate()[1][-2000:]}"}
        before = daemon.ctl("status") or {}
        env = worker_env(case, "daemon-kill", shim, work, 0, 0, cupy_ptx, base=daemon.env("be", work / "unused"))
        result = run_worker_process(case, "daemon-kill", work, env)
        after = daemon.ctl("status") or {}
        stop.write_text("stop\n")
        try:
            pinger.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pinger.kill()
    kills = [sum(d.get("kills", 0) for d in s.get("devices", [])) for s in (before, after)]
    result["daemon"] = {"kills": kills[1] - kills[0], "rt_clients": after.get("clients", {}).get("rt"),
                        "pings": int(Path(f"{stop}.pings").read_text()) if Path(f"{stop}.pings").exists() else None,
                        "pinger_rc": pinger.returncode}
    return result


def summarize_stats(stats: dict | None) -> dict:
    if not stats:
        return {}
    keys = ("launches", "copies", "memsets", "module_loads", "unmanaged_total", "held", "inline",
            "proc_unknown", "deferred_errors", "forced_releases")
    return {k: stats[k] for k in keys if k in stats}


def markdown(report: dict, args) -> list[str]:
    """The results table."""
    modes = [m for m in dict.fromkeys(["baseline", *args.modes.split(",")]) if m != "baseline"]
    titles = {"baseline2": "baseline twice", "open": "shim, gate open", "toggle": "shim, gate toggling",
              "route": "shim, toggling + routed", "kill": "shim, toggling + kill twins",
              "daemon-kill": "shim + sluiced, kill words raised"}
    lines = [f"Gate toggling: shut and reopened every {args.toggle_ms} ms. Routed: the same, and every "
             f"second period the work moves to a green context of {args.route_sms} SMs and back. Kill "
             "twins: the same as toggling, with SLUICE_KILL=1 and no duration threshold.", "",
             "| workload | " + " | ".join(titles.get(m, m) for m in modes) +
             " | launches | copies | module loads | held (toggle) | routed ops / route switches | "
             "twins built / twin launches | unmanaged |",
             "|---|" + "---|" * (len(modes) + 7)]

    def stats_of(c, mode):
        return (c["runs"].get(mode) or {}).get("stats") or {}

    for case, c in report["cases"].items():
        s_open = summarize_stats(stats_of(c, "open"))
        s_tog = summarize_stats(stats_of(c, "toggle"))
        routing = stats_of(c, "route").get("routing", {})
        kill = stats_of(c, "kill").get("kill", {})
        unmanaged_cells = "/".join(str(stats_of(c, m).get("unmanaged_total", "-"))
                                   for m in modes if m != "baseline2")
        lines.append(f"| {case} | " + " | ".join(c["verdict"][m] for m in modes) +
                     f" | {s_open.get('launches', '-')} | {s_open.get('copies', '-')} | "
                     f"{s_open.get('module_loads', '-')} | {s_tog.get('held', '-')} | "
                     f"{routing.get('routed_ops', '-')} / {routing.get('route_switches', '-')} | "
                     f"{kill.get('twins_built', '-')} / {kill.get('twin_launches', '-')} | {unmanaged_cells} |")
    if any("daemon-kill" in c["runs"] for c in report["cases"].values()):
        lines += ["", "Kill words raised by sluiced: the workload is a BE client (SLUICE_KILL=1, no duration "
                  "threshold) and an RT process pings the GPU about every millisecond; each ping that finds BE "
                  "work in flight raises the BE kill word. Twin time share: the gate's predicted time of the "
                  "twin launches over that of all BE launches (0 where nothing predicted). Kernels without a "
                  "captured image: kernels whose module came through a load the shim does not hook (the CUDA "
                  "runtime's own registrations); PTX from loaded objects: such modules whose PTX was found "
                  "in the fatbin sections of the program or its libraries.", "",
                  "| workload | result | daemon kills | RT pings | PTX paired with cubins | PTX from loaded objects | "
                  "twins built + cached | "
                  "twin launches / BE launches | twin time share | kernels without a captured image |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for case, c in report["cases"].items():
            run = c["runs"].get("daemon-kill")
            if not run:
                continue
            k = (run.get("stats") or {}).get("kill", {})
            d = run.get("daemon", {})
            share = (f"{k['twin_kernel_ns'] / k['be_kernel_ns']:.2f}" if k.get("be_kernel_ns") else "-")
            lines.append(f"| {case} | {c['verdict']['daemon-kill']} | {d.get('kills', '-')} | {d.get('pings', '-')} | "
                         f"{k.get('ptx_paired', '-')} | {k.get('embedded_ptx', '-')} | "
                         f"{k.get('twins_built', 0) + k.get('twins_cached', 0)} | "
                         f"{k.get('twin_launches', '-')} / {k.get('be_kernels', '-')} | {share} | "
                         f"{(run.get('stats') or {}).get('uncaptured_kernels', '-')} |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", choices=CASES)
    parser.add_argument("--dump")
    parser.add_argument("--shim", help="path of libsluice.so")
    parser.add_argument("--out", default=".")
    parser.add_argument("--report-name", default="frameworks", help="writes OUT/NAME.json and OUT/NAME.md")
    parser.add_argument("--cases", default=",".join(DEFAULT_CASES),
                        help=f"comma-separated, from {','.join(CASES)}")
    parser.add_argument("--toggle-ms", type=int, default=2)
    parser.add_argument("--modes", default="baseline,baseline2,open,toggle,route,kill",
                        help="which runs to make (baseline is always made)")
    parser.add_argument("--cupy-ptx", action="store_true",
                        help="every run, baselines too, with CUPY_COMPILE_WITH_PTX=1")
    parser.add_argument("--pinger", help="internal: the RT process of daemon-kill; runs until this file exists")
    parser.add_argument("--triton-steps", type=int, default=400,
                        help="steps of the triton_loop and cuda_extension cases (every run, baselines too)")
    parser.add_argument("--route-sms", type=int, default=64,
                        help="SMs of the partition the route mode moves work to and from")
    args = parser.parse_args()
    if args.pinger:
        run_pinger(args.pinger)
        return 0
    if args.worker:
        run_worker(args.worker, args.dump)
        return 0

    if shutil.which("nvidia-smi") is None or subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode != 0:
        print("check_frameworks: no GPU here; skipping")
        return 77
    shim = str(Path(args.shim).resolve())
    os.environ["SLUICE_CHECK_TRITON_STEPS"] = str(args.triton_steps)  # inherited by every worker
    out = Path(args.out)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    device = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                            text=True).stdout.strip()
    report = {"device": device, "shim": shim, "toggle_ms": args.toggle_ms, "route_sms": args.route_sms, "modes": args.modes,
              "triton_steps": args.triton_steps,
              "cupy_compile_with_ptx": args.cupy_ptx, "cases": {}}
    for case in args.cases.split(","):
        runs = {mode: run_case(case, mode, shim, work, args.toggle_ms, args.route_sms, args.cupy_ptx)
                for mode in dict.fromkeys(["baseline", *args.modes.split(",")])}
        base = runs["baseline"].get("digest")
        verdict = {}
        for mode, run in runs.items():
            if mode == "baseline":
                continue
            verdict[mode] = "identical" if base and run.get("digest") == base else (
                "error" if "error" in run else "DIFFERENT")
        report["cases"][case] = {"runs": runs, "verdict": verdict}
        print(f"{case}: {verdict}", flush=True)

    all_identical = all(v == "identical" for c in report["cases"].values() for v in c["verdict"].values())
    unmanaged = sum(r.get("stats", {}).get("unmanaged_total", 0)
                    for c in report["cases"].values() for r in c["runs"].values())
    report["all_identical"] = all_identical
    report["unmanaged_total"] = unmanaged
    (out / f"{args.report_name}.json").write_text(json.dumps(report, indent=2))

    lines = markdown(report, args)
    (out / f"{args.report_name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all_identical and unmanaged == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
