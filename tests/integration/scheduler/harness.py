"""Processes for the scheduler's integration tests: sluiced, sluicectl and sluice-loadgen clients
under libsluice.so over the fake driver, sharing one fake device. Standard library only."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "scripts", "demo.d"))
from binaries import binaries  # noqa: E402


def sanitized(library):
    """Whether a library was built with ASan or TSan. Such a shim cannot be preloaded into an
    uninstrumented program (this Python, sh): the sanitizer runtime would have to come first, so
    tests that do that are skipped in sanitized builds."""
    with open(library, "rb") as f:
        data = f.read()
    return b"__asan_init" in data or b"__tsan_init" in data


def sanitizer_options(env):
    """In an ASan build, clients run with libsluice.so preloaded ahead of the ASan runtime, and leak
    reports of the host programs are not sluice's to fix; sluiced keeps its own leak checks."""
    return "verify_asan_link_order=0:" + env.get("ASAN_OPTIONS", "")


class Harness:
    def __init__(self, build):
        self.build = os.path.abspath(build)
        self.work = tempfile.mkdtemp(prefix="sluice-it-")
        self.socket = os.path.join(self.work, "sluiced.sock")
        self.policy_path = os.path.join(self.work, "policy.json")
        self.gpu_dir = os.path.join(self.work, "gpu")
        os.makedirs(self.gpu_dir)
        self.bin = binaries(self.build)
        for path in self.bin.values():
            if not os.path.exists(path):
                sys.exit(f"missing {path}: build sluiced, sluicectl, sluice-loadgen, sluice and sluice_fake_cuda")
        self.daemon = None
        self.daemon_log = None
        self.clients = []

    def env(self, **extra):
        env = dict(os.environ)
        env.pop("LD_PRELOAD", None)
        env.update({"SLUICE_SOCKET": self.socket, "SLUICE_FAKE_GPU_DIR": self.gpu_dir, "SLUICE_LOG": "info"})
        env["ASAN_OPTIONS"] = sanitizer_options(env)
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def write_policy(self, policy):
        with open(self.policy_path, "w") as f:
            json.dump(policy, f)

    def start_daemon(self, policy=None, args=("--gpu", "0")):
        if policy is not None:
            self.write_policy(policy)
        self.daemon_log = os.path.join(self.work, f"sluiced-{time.time_ns()}.log")
        cmd = [self.bin["sluiced"], *args]
        if os.path.exists(self.policy_path):
            cmd += ["--policy", self.policy_path]
        self.daemon = subprocess.Popen(cmd, env=self.env(), stderr=open(self.daemon_log, "w"))
        wait_for(lambda: self.ctl_json("status") is not None, 10, "sluiced did not answer")
        return self.daemon

    def stop_daemon(self, sig=signal.SIGTERM):
        if self.daemon is None:
            return None
        self.daemon.send_signal(sig)
        code = self.daemon.wait(timeout=10)
        self.daemon = None
        return code

    def daemon_output(self):
        return open(self.daemon_log).read() if self.daemon_log else ""

    def client(self, role_args, label=None, shim=True, out=None, extra_env=None):
        """Starts sluice-loadgen; `role_args` starts with rt, be or copy."""
        extra = dict(extra_env or {})
        if shim:
            extra.update({"LD_PRELOAD": self.bin["shim"], "SLUICE_REAL_LIBCUDA": self.bin["fake"]})
        if label:
            extra["SLUICE_CLASS"] = label
        extra["ASAN_OPTIONS"] = "detect_leaks=0:" + sanitizer_options(os.environ)
        cmd = [self.bin["loadgen"]]
        if not shim:
            cmd += ["--driver", self.bin["fake"]]
        if out:
            cmd += ["--out", out]
        proc = subprocess.Popen(cmd + list(role_args), env=self.env(**extra), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        self.clients.append(proc)
        return proc

    def ctl(self, *args, env=None, preexec_fn=None):
        return subprocess.run([self.bin["sluicectl"], "--socket", self.socket, *args], env=env or self.env(),
                              capture_output=True, text=True, timeout=30, preexec_fn=preexec_fn)

    def ctl_json(self, *args):
        result = self.ctl(*args, "--json")
        if result.returncode != 0:
            return None
        return json.loads(result.stdout)

    def clients_by_pid(self):
        ps = self.ctl_json("ps") or {"clients": []}
        return {c["pid"]: c for c in ps["clients"]}

    def close(self):
        for proc in self.clients:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if self.daemon is not None:
            self.daemon.kill()
            self.daemon.wait()
        shutil.rmtree(self.work, ignore_errors=True)


def wait_for(condition, timeout, what, interval=0.005):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s: {what}")


def expect(condition, message):
    if not condition:
        raise AssertionError(message)


def run_tests(tests, build):
    """Runs each test(harness) with a fresh harness; prints results; returns an exit code."""
    failed = 0
    for test in tests:
        h = Harness(build)
        start = time.time()
        try:
            test(h)
            print(f"[ ok ] {test.__name__} ({time.time() - start:.1f} s)")
        except Exception as error:  # noqa: BLE001 - report every failure and go on
            failed += 1
            print(f"[FAIL] {test.__name__}: {error}")
            print("---- sluiced log ----\n" + h.daemon_output()[-4000:])
        finally:
            h.close()
    return 1 if failed else 0


# ---- sluiced's control protocol from Python (no sluicectl process: for timing-sensitive checks) --

import socket as _socket
import struct as _struct

MAGIC = 0x45434C53
ABI_MAJOR, ABI_MINOR = 1, 0
ROLE_SHIM, ROLE_CONTROL = 1, 2


def hello(role=ROLE_CONTROL, major=ABI_MAJOR, label=b""):
    # layout.h: Hello (112 bytes)
    return _struct.pack("<IHHII32sQQ48s", MAGIC, major, ABI_MINOR, role, os.getpid(), label, 0, 0, b"")


def frame(payload):
    return _struct.pack("<I", len(payload)) + payload


def read_frame(sock):
    def exact(n):
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("connection closed")
            data += chunk
        return data
    (length,) = _struct.unpack("<I", exact(4))
    return exact(length)


class Control:
    """One control connection, reused for many requests."""

    def __init__(self, path):
        self.sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(path)
        self.sock.sendall(frame(hello()))

    def request(self, cmd, **fields):
        self.sock.sendall(frame(json.dumps({"cmd": cmd, **fields}).encode()))
        return json.loads(read_frame(self.sock))

    def close(self):
        self.sock.close()
