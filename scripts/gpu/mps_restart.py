#!/usr/bin/env python3
"""sluiced --mode mps with the real nvidia-cuda-mps-control: a client runs under sluiced's MPS
daemon, the control daemon is killed (SIGKILL), sluiced starts it again, and a second client runs
under the new one and computes the same result. At exit sluiced quits the control daemon it
started, so no control daemon of its pipe directory is left.

    python3 scripts/gpu/mps_restart.py --build BUILD --out DIR

The clients are the nvcc-built extension of check_frameworks.py's cuda_extension case (BUILD/tests/
gpu/shim/libsluice_check_extension.so), loaded with ctypes under LD_PRELOAD=libsluice.so as BE
clients. Writes DIR/mps_restart.json; exits 1 when a step fails and 77 without a GPU or without
nvidia-cuda-mps-control.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sluice_env import Sluiced  # noqa: E402

CLIENT = r"""
import ctypes, hashlib, os, sys
import numpy as np
lib = ctypes.CDLL(sys.argv[1])
head = np.zeros(4096, np.float32)
sums = np.zeros(4 * 1024, np.float32)
p = ctypes.POINTER(ctypes.c_float)
status = lib.sluice_check_extension_run(200, head.ctypes.data_as(p), head.size, sums.ctypes.data_as(p), sums.size)
print(status, hashlib.sha256(head.tobytes() + sums.tobytes()).hexdigest())
"""

POLICY = {"version": 1, "defaults": {"class": "be"}, "rules": []}


def mps_pids(pipe_dir: str, program: str = "nvidia-cuda-mps") -> list[int]:
    """Processes whose program name starts with `program` (the control daemon and its servers by
    default) and whose environment names `pipe_dir`."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            name = os.path.basename((proc / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace"))
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if name.startswith(program) and f"CUDA_MPS_PIPE_DIRECTORY={pipe_dir}".encode() in env:
            pids.append(int(proc.name))
    return pids


def run_client(daemon: Sluiced, library: Path, work: Path, name: str) -> dict:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", CLIENT, str(library)], capture_output=True, text=True,
                          timeout=120, env=daemon.env("be", work / f"{name}.stats.json"))
    out = proc.stdout.split()
    return {"rc": proc.returncode, "status": int(out[0]) if len(out) == 2 else None,
            "digest": out[1] if len(out) == 2 else None, "seconds": round(time.monotonic() - start, 2),
            "stderr": proc.stderr[-1500:] if proc.returncode else ""}


def servers(control: str, pipe_dir: str) -> list[str]:
    p = subprocess.run([control], input="get_server_list\n", capture_output=True, text=True, timeout=10,
                       env=dict(os.environ, CUDA_MPS_PIPE_DIRECTORY=pipe_dir))
    return p.stdout.split() if p.returncode == 0 else []


def wait_for(predicate, seconds: float):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build", required=True)
    parser.add_argument("--out", default=".")
    parser.add_argument("--mps-control", default=shutil.which("nvidia-cuda-mps-control") or "")
    args = parser.parse_args()
    if not args.mps_control or subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode != 0:
        print("mps_restart: no GPU or no nvidia-cuda-mps-control here; skipping")
        return 77
    build = Path(args.build).resolve()
    library = build / "tests/gpu/shim/libsluice_check_extension.so"
    out = Path(args.out)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    device = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                            text=True).stdout.strip()
    report: dict = {"device": device, "steps": []}
    checks: dict = {}

    def step(name: str, **fields):
        fields["name"] = name
        report["steps"].append(fields)
        print(json.dumps(fields), flush=True)

    sluiced = Sluiced(build, True, args.mps_control, work, policy=POLICY)
    sluiced.args += ["--mps-check-ms", "200"]
    with sluiced as daemon:
        mps = (daemon.ctl("status") or {}).get("daemon", {}).get("mps", {})
        pipe_dir = mps.get("pipe_dir", "")
        step("sluiced started", mps=mps, mps_pids=mps_pids(pipe_dir))
        checks["control daemon started"] = mps.get("state") == "started" and bool(mps_pids(pipe_dir, "nvidia-cuda-mps-control"))

        first = run_client(daemon, library, work, "first")
        step("first client", **first, servers=servers(args.mps_control, pipe_dir))
        checks["first client ran"] = first["rc"] == 0 and first["status"] == 0

        killed = mps_pids(pipe_dir, "nvidia-cuda-mps-control")  # its MPS server stays, as after a crash
        for pid in killed:
            os.kill(pid, signal.SIGKILL)
        t0 = time.monotonic()
        restarted = wait_for(lambda: (m := (daemon.ctl("status") or {}).get("daemon", {}).get("mps", {}))
                             .get("restarts", 0) >= 1 and m.get("state") == "started" and m, 60)
        step("control daemon killed", killed=killed, restarted_after_s=round(time.monotonic() - t0, 2),
             mps=restarted, mps_pids=mps_pids(pipe_dir))
        checks["sluiced started it again"] = bool(restarted)

        second = run_client(daemon, library, work, "second")
        step("second client", **second, servers=servers(args.mps_control, pipe_dir))
        checks["second client ran"] = second["rc"] == 0 and second["status"] == 0
        checks["same result"] = first["digest"] is not None and first["digest"] == second["digest"]
        log_path = daemon.dir / "sluiced.log"
    left = wait_for(lambda: not mps_pids(pipe_dir), 20) is not None
    step("sluiced stopped", mps_pids=mps_pids(pipe_dir), log_tail=log_path.read_text()[-3000:])
    checks["control daemon quit at exit"] = left
    for pid in mps_pids(pipe_dir):  # leave the machine as it was
        os.kill(pid, signal.SIGKILL)

    report["checks"] = checks
    report["pass"] = all(checks.values())
    (out / "mps_restart.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(checks, indent=2))
    return 0 if report["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
