"""GPU environments the benchmark scripts share: an MPS control daemon of their own, and sluiced
with a policy in a temporary folder whose clients run under LD_PRELOAD=libsluice.so."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path


class Mps:
    """An MPS control daemon of our own, with its pipe and log directories in a temporary folder."""

    def __init__(self, control):
        self.control = control
        self.dir = Path(tempfile.mkdtemp(prefix="sluice-mps-"))
        self.env = dict(os.environ, CUDA_MPS_PIPE_DIRECTORY=str(self.dir / "pipe"),
                        CUDA_MPS_LOG_DIRECTORY=str(self.dir / "log"))

    def __enter__(self):
        for d in ("pipe", "log"):
            (self.dir / d).mkdir(mode=0o700)
        subprocess.run([self.control, "-d"], env=self.env, check=True, timeout=30)
        for _ in range(50):
            p = subprocess.run([self.control], input="get_server_list\n", env=self.env,
                               capture_output=True, text=True, timeout=10)
            if p.returncode == 0:
                return self
            time.sleep(0.1)
        raise RuntimeError("the MPS control daemon did not answer")

    def __exit__(self, *exc):
        subprocess.run([self.control], input="quit\n", env=self.env, capture_output=True, text=True,
                       timeout=30)
        time.sleep(0.5)
        shutil.rmtree(self.dir, ignore_errors=True)


MECHANISMS_POLICY = {
    "version": 1, "defaults": {"class": "be"},
    "rules": [{"name": "bench-be", "match": {"label": "be"}, "class": "be"},
              {"name": "bench-rt", "match": {"exe": "mechanisms"}, "class": "rt"}]}


class Sluiced:
    """sluiced with the given policy (default: the mechanism benchmark's RT process is RT, its BE
    process lowers itself with SLUICE_CLASS=be), its socket in a temporary folder; --mps makes it
    own an MPS daemon."""

    def __init__(self, build, mps, mps_control, work, policy=None):
        self.build = Path(build).resolve()
        self.dir = Path(tempfile.mkdtemp(prefix="sluiced-", dir=work))
        self.socket = self.dir / "sluiced.sock"
        self.policy = self.dir / "policy.json"
        self.policy.write_text(json.dumps(policy or MECHANISMS_POLICY))
        self.args = [str(self.build / "scheduler/sluiced"), "--policy", str(self.policy),
                     "--socket", str(self.socket), "--mode", "mps" if mps else "timeslice"]
        if mps:
            self.args += ["--mps-control", mps_control]
        self.mps = mps
        self.proc = None

    def __enter__(self):
        self.log = open(self.dir / "sluiced.log", "w")
        self.proc = subprocess.Popen(self.args, stdout=self.log, stderr=subprocess.STDOUT)
        for _ in range(200):
            if self.socket.exists() and self.ctl("status") is not None:
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"sluiced exited: {(self.dir / 'sluiced.log').read_text()[-400:]}")
            time.sleep(0.05)
        raise RuntimeError("sluiced did not come up")

    def ctl(self, *args):
        p = subprocess.run([str(self.build / "tools/sluicectl/sluicectl"), "--socket", str(self.socket),
                            *args, "--json"], capture_output=True, text=True, timeout=10)
        return json.loads(p.stdout) if p.returncode == 0 and p.stdout.strip() else None

    def env(self, role, stats):
        env = dict(os.environ, LD_PRELOAD=str(self.build / "shim/libsluice.so"),
                   SLUICE_SOCKET=str(self.socket), SLUICE_STATS_FILE=str(stats))
        if role == "be":
            env["SLUICE_CLASS"] = "be"
        # No CUDA_MPS_PIPE_DIRECTORY: in mps mode the shim takes sluiced's before the driver starts.
        env.pop("CUDA_MPS_PIPE_DIRECTORY", None)
        return env

    def mps_servers(self, mps_control):
        """The MPS control daemon's server list: non-empty once clients run under sluiced's MPS."""
        if not self.mps:
            return None
        p = subprocess.run([mps_control], input="get_server_list\n", capture_output=True, text=True, timeout=10,
                           env=dict(os.environ, CUDA_MPS_PIPE_DIRECTORY=str(self.dir / "mps" / "pipe")))
        return p.stdout.split()

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
