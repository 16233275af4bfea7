#!/usr/bin/env python3
"""Cost of kill instrumentation on CuPy kernels compiled with PTX, on a GPU machine.

CuPy with CUPY_COMPILE_WITH_PTX=1 (and any NVRTC user) hands the driver PTX, so sluice can make a
kill-instrumented twin of each kernel. This script compiles a few typical CuPy raw kernels to PTX
with NVRTC (compute_90), makes their twins with `sluice-ptx instrument`, loads both with
cupy.RawModule, and for each kernel:
  - checks the twin's output (tracked launch: a zeroed launch record, the kill word 0) is
    bit-identical to the original's;
  - times original and twin interleaved with CUDA events (median of many runs, warm-ups excluded).
Triton kernels are covered by tests/gpu/ptx/kill_resume (bench/results/ptx_kill_resume.json).

    python3 scripts/gpu/instrumented_overhead.py --sluice-ptx build/release/ptx_rewriter/sluice-ptx --out DIR

Writes DIR/instrumented_overhead_cupy.json. Exits 77 without a GPU or CuPy.
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

KERNELS = {
    # name: (source, entry)
    "saxpy": (r'''
extern "C" __global__ void saxpy(const float* x, const float* y, float* out, float a, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  for (; i < n; i += gridDim.x * blockDim.x) out[i] = a * x[i] + y[i];
}''', "saxpy"),
    "block_sum": (r'''
extern "C" __global__ void block_sum(const float* x, float* out, int n) {
  __shared__ float part[256];
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  part[threadIdx.x] = i < n ? x[i] : 0.0f;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = part[0];
}''', "block_sum"),
    "tiled_matmul": (r'''
extern "C" __global__ void tiled_matmul(const float* a, const float* b, float* c, int n) {
  __shared__ float ta[16][16], tb[16][16];
  int row = blockIdx.y * 16 + threadIdx.y, col = blockIdx.x * 16 + threadIdx.x;
  float acc = 0.0f;
  for (int t = 0; t < n / 16; ++t) {
    ta[threadIdx.y][threadIdx.x] = a[row * n + t * 16 + threadIdx.x];
    tb[threadIdx.y][threadIdx.x] = b[(t * 16 + threadIdx.y) * n + col];
    __syncthreads();
    for (int k = 0; k < 16; ++k) acc += ta[threadIdx.y][k] * tb[k][threadIdx.x];
    __syncthreads();
  }
  c[row * n + col] = acc;
}''', "tiled_matmul"),
}


def nvrtc_ptx(cupy, source, name):
    try:
        from cupy_backends.cuda.libs import nvrtc
    except ImportError:
        from cupy.cuda import nvrtc
    prog = nvrtc.createProgram(source, name + ".cu", [], [])
    try:
        nvrtc.compileProgram(prog, ["-arch=compute_90"])
        return nvrtc.getPTX(prog)
    finally:
        nvrtc.destroyProgram(prog)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sluice-ptx", required=True)
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()
    try:
        import cupy
        import numpy as np
        if cupy.cuda.runtime.getDeviceCount() == 0:
            raise RuntimeError("no device")
    except Exception as e:  # noqa: BLE001 - any failure here means there is nothing to measure
        print(f"instrumented_overhead.py: no GPU with CuPy ({e})", file=sys.stderr)
        return 77
    work = Path(tempfile.mkdtemp(prefix="sluice-cupy-"))
    kill_word = cupy.zeros(1, dtype=cupy.uint32)
    results = {"what": "CuPy raw kernels (NVRTC PTX, compute_90): original vs kill-instrumented twin, tracked launch",
               "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "device": cupy.cuda.runtime.getDeviceProperties(0)["name"].decode(),
               "runs": args.runs, "kernels": {}}
    rng = np.random.default_rng(0)
    n = 1 << 24
    m = 1024
    x = cupy.asarray(rng.standard_normal(n, dtype=np.float32))
    y = cupy.asarray(rng.standard_normal(n, dtype=np.float32))
    a = cupy.asarray(rng.standard_normal((m, m), dtype=np.float32))
    b = cupy.asarray(rng.standard_normal((m, m), dtype=np.float32))
    setups = {
        "saxpy": lambda out: ((1056,), (256,), [x, y, out, np.float32(1.5), np.int32(n)], cupy.empty(n, cupy.float32)),
        "block_sum": lambda out: ((n // 256,), (256,), [x, out, np.int32(n)], cupy.empty(n // 256, cupy.float32)),
        "tiled_matmul": lambda out: ((m // 16, m // 16), (16, 16), [a, b, out, np.int32(m)], cupy.empty((m, m), cupy.float32)),
    }
    for name, (source, entry) in KERNELS.items():
        ptx = work / f"{name}.ptx"
        twin = work / f"{name}.twin.ptx"
        report = work / f"{name}.report.json"
        text = nvrtc_ptx(cupy, source, name)
        ptx.write_bytes(text if isinstance(text, bytes) else text.encode())
        p = subprocess.run([args.sluice_ptx, "instrument", str(ptx), "-o", str(twin), "--report", str(report)],
                           capture_output=True, text=True)
        if p.returncode != 0:
            results["kernels"][name] = {"error": f"sluice-ptx exit {p.returncode}: {p.stderr.strip()[-300:]}"}
            continue
        original = cupy.RawModule(path=str(ptx)).get_function(entry)
        twin_mod = cupy.RawModule(path=str(twin))
        twin_fn = twin_mod.get_function(entry)
        flag = twin_mod.get_global("__sluice_kill_flag")
        flag_value = cupy.asarray(np.array([kill_word.data.ptr], dtype=np.uint64))
        flag.copy_from_device(flag_value.data, 8)
        out_ref = setups[name](None)[3]
        grid, block, params, _ = setups[name](out_ref)
        blocks = int(np.prod(grid))
        record = cupy.zeros((8 + 4 * ((blocks + 31) // 32)) // 4, dtype=cupy.uint32)
        out_twin = cupy.empty_like(out_ref)
        twin_params = setups[name](out_twin)[2] + [np.uint64(record.data.ptr)]

        def run_original():
            original(grid, block, params)

        def run_twin():
            record.fill(0)
            twin_fn(grid, block, twin_params)

        run_original()
        run_twin()
        cupy.cuda.Device().synchronize()
        identical = bool(cupy.asnumpy(out_ref).tobytes() == cupy.asnumpy(out_twin).tobytes())
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        times = {"original": [], "twin": []}

        def timed(fn):
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            return cupy.cuda.get_elapsed_time(start, stop) * 1000.0

        # The twin's record reset is a separate memset; time it alone and subtract its median.
        memset_us = statistics.median(timed(lambda: record.fill(0)) for _ in range(50))
        for i in range(args.runs + 20):
            t_o, t_t = timed(run_original), timed(run_twin) - memset_us
            if i >= 20:
                times["original"].append(t_o)
                times["twin"].append(t_t)
        med_o, med_t = statistics.median(times["original"]), statistics.median(times["twin"])
        rep = json.loads(report.read_text()) if report.exists() else {}
        results["kernels"][name] = {
            "grid": list(grid), "block": list(block), "identical_output": identical,
            "original_us_p50": med_o, "twin_us_p50": med_t, "overhead_percent": (med_t / med_o - 1) * 100,
            "record_reset_us_p50": memset_us, "report": rep,
        }
        print(f"{name}: original {med_o:.1f} us, twin {med_t:.1f} us ({(med_t / med_o - 1) * 100:+.1f}%), "
              f"identical={identical}", file=sys.stderr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "instrumented_overhead_cupy.json").write_text(json.dumps(results, indent=2) + "\n")
    ok = all(k.get("identical_output") for k in results["kernels"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
