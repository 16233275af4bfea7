#!/usr/bin/env python3
"""Collects real PTX and cubins from Triton, torch.compile and CuPy on a GPU machine.

The files become test inputs for ptx_rewriter (tests/ptx/corpus/). Run on a GPU machine:
    python3 scripts/gpu/collect_corpus.py OUT_DIR
It writes OUT_DIR/corpus.tar.gz and OUT_DIR/environment.json (driver, GPU, package versions, MPS).
"""
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile


def main() -> None:
    out = sys.argv[1] if len(sys.argv) > 1 else "."
    work = tempfile.mkdtemp(prefix="sluice-corpus-")
    os.environ["TRITON_CACHE_DIR"] = os.path.join(work, "triton")
    os.environ["CUPY_CACHE_DIR"] = os.path.join(work, "cupy")
    os.environ["CUPY_COMPILE_WITH_PTX"] = "1"
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(work, "inductor")

    env = {}
    import torch
    import triton
    import triton.language as tl

    env["torch"] = torch.__version__
    env["triton"] = triton.__version__
    env["gpu"] = torch.cuda.get_device_name(0)
    env["sms"] = torch.cuda.get_device_properties(0).multi_processor_count

    @triton.jit
    def add_kernel(x, y, out, n, BLOCK: tl.constexpr):
        pid = tl.program_id(0)
        offs = pid * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        tl.store(out + offs, tl.load(x + offs, mask=mask) + tl.load(y + offs, mask=mask), mask=mask)

    @triton.jit
    def softmax_kernel(out, inp, stride, n_cols, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        cols = tl.arange(0, BLOCK)
        x = tl.load(inp + row * stride + cols, mask=cols < n_cols, other=-float("inf"))
        x = x - tl.max(x, axis=0)
        num = tl.exp(x)
        tl.store(out + row * stride + cols, num / tl.sum(num, axis=0), mask=cols < n_cols)

    @triton.jit
    def matmul_kernel(a, b, c, M, N, K, sam, sak, sbk, sbn, scm, scn,
                      BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
        rm = pid_m * BM + tl.arange(0, BM)
        rn = pid_n * BN + tl.arange(0, BN)
        rk = tl.arange(0, BK)
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        for k in range(0, K, BK):
            av = tl.load(a + rm[:, None] * sam + (k + rk)[None, :] * sak)
            bv = tl.load(b + (k + rk)[:, None] * sbk + rn[None, :] * sbn)
            acc += tl.dot(av, bv)
        tl.store(c + rm[:, None] * scm + rn[None, :] * scn, acc.to(tl.float16))

    @triton.jit
    def atomic_kernel(x, counter, n, BLOCK: tl.constexpr):
        pid = tl.program_id(0)
        offs = pid * BLOCK + tl.arange(0, BLOCK)
        v = tl.load(x + offs, mask=offs < n, other=0.0)
        tl.atomic_add(counter, tl.sum(v, axis=0))

    n = 1 << 20
    x = torch.randn(n, device="cuda")
    y = torch.randn(n, device="cuda")
    o = torch.empty_like(x)
    add_kernel[(n // 1024,)](x, y, o, n, BLOCK=1024)
    m = torch.randn(256, 1000, device="cuda")
    so = torch.empty_like(m)
    softmax_kernel[(256,)](so, m, m.stride(0), 1000, BLOCK=1024)
    a = torch.randn(512, 512, device="cuda", dtype=torch.float16)
    b = torch.randn(512, 512, device="cuda", dtype=torch.float16)
    c = torch.empty(512, 512, device="cuda", dtype=torch.float16)
    matmul_kernel[(4, 4)](a, b, c, 512, 512, 512, a.stride(0), a.stride(1), b.stride(0), b.stride(1),
                          c.stride(0), c.stride(1), BM=128, BN=128, BK=32)
    cnt = torch.zeros(1, device="cuda")
    atomic_kernel[(n // 1024,)](x, cnt, n, BLOCK=1024)

    model = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.GELU(), torch.nn.LayerNorm(512),
                                torch.nn.Linear(512, 10)).cuda()
    compiled = torch.compile(model)
    compiled(torch.randn(64, 256, device="cuda")).sum().backward()
    torch.cuda.synchronize()

    try:
        import cupy as cp
        env["cupy"] = cp.__version__
        k = cp.RawKernel(r'''
        extern "C" __global__ void saxpy(float a, const float* x, float* y, int n) {
          int i = blockIdx.x * blockDim.x + threadIdx.x;
          if (i < n) y[i] = a * x[i] + y[i];
        }''', "saxpy")
        cx = cp.arange(4096, dtype=cp.float32)
        cy = cp.ones(4096, dtype=cp.float32)
        k((16,), (256,), (cp.float32(2.0), cx, cy, cp.int32(4096)))
        (cx * cy + 1).sum()
        cp.cuda.Device().synchronize()
    except Exception as err:  # noqa: BLE001 - the corpus is best effort per framework
        env["cupy_error"] = repr(err)

    env["mps_control"] = shutil.which("nvidia-cuda-mps-control")
    env["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,compute_mode",
                                        "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
    os.makedirs(out, exist_ok=True)
    with tarfile.open(os.path.join(out, "corpus.tar.gz"), "w:gz") as tar:
        for root, _, files in os.walk(work):
            for name in files:
                if name.endswith((".ptx", ".cubin", ".json", ".cu", ".ttgir")) or "cupy" in root:
                    path = os.path.join(root, name)
                    if os.path.getsize(path) < 4 << 20:
                        tar.add(path, arcname=os.path.relpath(path, work))
    with open(os.path.join(out, "environment.json"), "w") as f:
        json.dump(env, f, indent=2)
    print(json.dumps(env, indent=2))


if __name__ == "__main__":
    main()
