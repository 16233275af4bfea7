#!/usr/bin/env python3
"""sluiced --mode mps with a fake nvidia-cuda-mps-control (fake_mps_control.py): the control daemon
is started, announced to clients, used for SM partitions while RT is active, and quit at exit; one
that already runs is adopted and left running; a control program that fails stops sluiced, or
falls back to timeslice mode with --mode auto; one that dies is started again. Kills: counted per client, and a registered kill
word (device memory of the fake driver, written by sluiced through its IPC handle) raised and
lowered.

  mps_mode_test.py BUILD_DIR
"""

import ctypes
import mmap
import os
import signal
import socket
import struct
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import ROLE_SHIM, Control, expect, frame, hello, run_tests, sanitized, wait_for  # noqa: E402

FAKE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_mps_control.py")
RT_RULE = {"name": "loadgen-rt", "match": {"exe": "sluice-loadgen", "cmdline": "* rt *"}, "class": "rt"}
POLICY = {"version": 1, "scheduler": {"be_budget_us": 200, "holdoff_ms": 50}, "defaults": {"class": "be"},
          "rules": [RT_RULE]}


def dirs(h):
    return os.path.join(h.work, "mps", "pipe"), os.path.join(h.work, "mps", "log")


def control_log(h):
    path = os.path.join(dirs(h)[1], "control.log")
    return open(path).read() if os.path.exists(path) else ""


def fake_client(h, command):
    pipe, log = dirs(h)
    env = dict(os.environ, CUDA_MPS_PIPE_DIRECTORY=pipe, CUDA_MPS_LOG_DIRECTORY=log)
    return subprocess.run([FAKE], input=command + "\n", env=env, capture_output=True, text=True, timeout=30)


def start_sluiced(h, *args, policy=POLICY, **env):
    """sluiced with `args`; returns the process (not waited for)."""
    h.write_policy(policy)
    h.daemon_log = os.path.join(h.work, "sluiced.log")
    cmd = [h.bin["sluiced"], "--gpu", "0", "--policy", h.policy_path, *args]
    h.daemon = subprocess.Popen(cmd, env=h.env(**env), stderr=open(h.daemon_log, "w"))
    return h.daemon


def wait_answering(h):
    wait_for(lambda: h.daemon.poll() is not None or h.ctl_json("status") is not None, 30, "sluiced did not answer")
    expect(h.daemon.poll() is None, f"sluiced exited with {h.daemon.returncode}:\n{h.daemon_output()}")


def test_mps_mode_starts_announces_partitions_and_quits(h):
    start_sluiced(h, "--mps", "--mps-control", FAKE)
    wait_answering(h)
    pipe, log = dirs(h)
    status = h.ctl_json("status")
    mps = status["daemon"]["mps"]
    expect(status["daemon"]["mode"] == "mps" and mps["state"] == "started" and mps["pipe_dir"] == pipe,
           f"status daemon: {status['daemon']}")
    expect(os.stat(pipe).st_mode & 0o777 == (0o755 if os.geteuid() == 0 else 0o700), "pipe directory mode")
    expect("get_server_list" in control_log(h), f"no health check: {control_log(h)}")

    control = Control(h.socket)
    env_reply = control.request("client-env")
    expect(env_reply.get("CUDA_MPS_PIPE_DIRECTORY") == pipe, f"client-env: {env_reply}")

    # A client learns the pipe directory from its segment and sets it in its environment.
    be = h.client(["be", "--kernel-us", "2000", "--grid", "132", "--depth", "4", "--duration-s", "30"], label="be")
    rt = h.client(["rt", "--kernel-us", "50", "--grid", "12", "--period-us", "2000", "--duration-s", "30"])
    device = lambda: (control.request("status")["devices"] or [{}])[0]
    routed = wait_for(lambda: device().get("route") == "partition" and device(), 20,
                      "BE routed to a partition while RT is active")
    expect(routed["partition_sms"] == 112 and routed["reserve_sms"] == 20,
           f"12-block RT kernels on 132 SMs: reserve 16 (rounded to 8), BE on 112: {routed}")
    human = h.ctl("status").stdout
    expect("mode mps: MPS control daemon started" in human and "route partition: BE on 112 SMs" in human,
           f"sluicectl status:\n{human}")
    ps = {c["pid"]: c for c in control.request("ps")["clients"]}
    expect(ps[be.pid]["partitioned"], f"ps be: {ps[be.pid]}")

    rt.kill()
    rt.wait()
    wait_for(lambda: device().get("route") == "full", 20, "the full GPU back after RT left and the hold-off")
    be.kill()
    _, be_err = be.communicate(timeout=30)
    expect(f"CUDA_MPS_PIPE_DIRECTORY={pipe}" in be_err, f"the client did not take the pipe directory:\n{be_err[-2000:]}")
    control.close()

    code = h.stop_daemon(signal.SIGTERM)
    expect(code == 0, f"sluiced exit code {code}")
    expect("quit\nexiting\n" in control_log(h), f"control daemon not quit: {control_log(h)}")
    expect(fake_client(h, "get_server_list").returncode != 0, "the control daemon still answers")


def test_rt_arriving_behind_killable_best_effort_work_counts_a_kill(h):
    policy = dict(POLICY, rules=[RT_RULE, {"name": "batch", "match": {"label": "batch"}, "class": "be", "priority": -1,
                                                "kill": True}])
    h.start_daemon(policy)
    be = h.client(["be", "--kernel-us", "2000", "--grid", "132", "--depth", "4", "--duration-s", "30"], label="batch")
    keep = h.client(["be", "--kernel-us", "2000", "--grid", "132", "--depth", "4", "--duration-s", "30"], label="be")
    control = Control(h.socket)
    ps = lambda: {c["pid"]: c for c in control.request("ps")["clients"]}
    # The gate is open: both keep four 2 ms kernels in flight, far over the 200 us budget.
    wait_for(lambda: all(((ps().get(p.pid) or {}).get("inflight_us") or 0) > 1000 for p in (be, keep)), 20,
             "BE work in flight before RT arrives")
    h.client(["rt", "--kernel-us", "50", "--period-us", "2000", "--duration-s", "30"])
    killed = wait_for(lambda: ps()[be.pid]["kills"] >= 1 and ps(), 20, "a kill for the killable client")
    expect(killed[be.pid]["kill_epoch"] >= 1 and killed[keep.pid]["kills"] == 0 and not killed[keep.pid]["kill"],
           f"ps: {killed[be.pid]} {killed[keep.pid]}")
    device = control.request("status")["devices"][0]
    expect(device["kill_epoch"] >= 1 and device["kills"] >= 1 and device["route"] == "full",
           f"timeslice mode kills but never partitions: {device}")
    rows = {int(line.split()[0]): line.split() for line in h.ctl("ps").stdout.splitlines()[1:]}
    # ... GPU% KILLS RULE EXE: a count for a killable client, "-" for the others.
    expect(rows[be.pid][-3].isdigit() and int(rows[be.pid][-3]) >= 1 and rows[keep.pid][-3] == "-",
           f"ps KILLS column: {rows}")
    control.close()


class FakeDeviceWord:
    """A 32-bit word in device memory of the fake driver, owned by this process, with its IPC handle."""

    def __init__(self, fake_path, offset):
        cuda = ctypes.CDLL(fake_path)
        u64 = ctypes.c_uint64
        cuda.cuMemAlloc_v2.argtypes = [ctypes.POINTER(u64), ctypes.c_size_t]
        cuda.cuMemsetD32_v2.argtypes = [u64, ctypes.c_uint32, ctypes.c_size_t]
        cuda.cuIpcGetMemHandle.argtypes = [ctypes.c_char_p, u64]
        cuda.cuMemcpyDtoH_v2.argtypes = [ctypes.c_void_p, u64, ctypes.c_size_t]
        ctx = ctypes.c_void_p()
        self.base = u64()
        self.handle = ctypes.create_string_buffer(64)
        for call in (lambda: cuda.cuInit(0), lambda: cuda.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), 0),
                     lambda: cuda.cuCtxSetCurrent(ctx), lambda: cuda.cuMemAlloc_v2(ctypes.byref(self.base), 4096),
                     lambda: cuda.cuMemsetD32_v2(self.base, 0, 1024),
                     lambda: cuda.cuIpcGetMemHandle(self.handle, self.base)):
            expect(call() == 0, "fake driver call failed")
        self.cuda, self.offset = cuda, offset

    def value(self):
        out = ctypes.c_uint32()
        expect(self.cuda.cuMemcpyDtoH_v2(ctypes.byref(out), self.base.value + self.offset, 4) == 0, "copy failed")
        return out.value


class RawShimClient:
    """A client that speaks the shim protocol itself: handshake, then messages into its ring."""

    def __init__(self, path, label):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(path)
        self.sock.sendall(frame(hello(role=ROLE_SHIM, label=label)))
        data, fds, _, _ = socket.recv_fds(self.sock, 4 + 200, 4)
        while len(data) < 4 + 200:
            data += self.sock.recv(4 + 200 - len(data))
        welcome = data[4:]
        expect(struct.unpack_from("<i", welcome, 8)[0] == 0 and len(fds) == 3, "welcome refused")
        segment_bytes = struct.unpack_from("<Q", welcome, 24)[0]
        self.segment = mmap.mmap(fds[0], segment_bytes)
        self.doorbell = fds[1]
        self.ring = struct.unpack_from("<Q", self.segment, 40)[0]
        self.slots = struct.unpack_from("<I", self.segment, 64)[0]

    def push(self, message):
        expect(len(message) == 128, "a slot is 128 bytes")
        head = struct.unpack_from("<Q", self.segment, self.ring)[0]
        slot = self.ring + 192 + (head % self.slots) * 128
        self.segment[slot:slot + 128] = message
        struct.pack_into("<Q", self.segment, self.ring, head + 1)
        os.write(self.doorbell, struct.pack("<Q", 1))



def test_kill_word_of_a_registered_client_is_written_and_lowered(h):
    if sanitized(h.bin["fake"]):
        print("[skip] the kill word test loads the fake driver into this Python process; "
              "it runs in the unsanitized build")
        return
    policy = dict(POLICY, rules=[RT_RULE, {"name": "batch", "match": {"label": "batch"}, "class": "be", "priority": -1,
                                           "kill": True}])
    start_sluiced(h, policy=policy, SLUICE_REAL_LIBCUDA=h.bin["fake"])
    wait_answering(h)
    word = FakeDeviceWord(h.bin["fake"], offset=16)
    client = RawShimClient(h.socket, b"batch")
    client.push(struct.pack("<HhIQ64s48s", 7, 0, 0, 16, word.handle.raw, b""))  # kill_word
    # status: device 0, busy, 5 ms of BE work in flight (over the 200 us budget)
    client.push(struct.pack("<HhB3sQQQQQQQIBB58s", 4, 0, 1, b"", 0, 5_000_000, 0, 0, 0, 0, 0, 0, 0, 0, b""))
    control = Control(h.socket)
    wait_for(lambda: any(c["inflight_us"] for c in control.request("ps")["clients"]), 20, "the status arrived")
    rt = h.client(["rt", "--kernel-us", "50", "--period-us", "2000", "--duration-s", "30"])
    epoch = wait_for(lambda: word.value(), 20, "sluiced wrote the kill word")
    device = control.request("status")["devices"][0]
    # RT goes idle between its kernels and arrives again; this client never reports its work gone,
    # so each arrival may kill again: the word holds an epoch the device has reached.
    expect(1 <= epoch <= device["kill_epoch"], f"kill word {epoch}, device {device}")
    rt.kill()
    rt.wait()
    wait_for(lambda: word.value() == 0, 20, "the kill word lowered once the gate opened")
    control.close()
    expect(h.stop_daemon() == 0, "sluiced exit code")
    expect("kill words are written through" in h.daemon_output(), "sluiced did not load the driver")


def test_running_control_daemon_is_adopted_and_left_running(h):
    pipe, log = dirs(h)
    os.makedirs(pipe, mode=0o700)
    os.makedirs(log, mode=0o700)
    env = dict(os.environ, CUDA_MPS_PIPE_DIRECTORY=pipe, CUDA_MPS_LOG_DIRECTORY=log)
    expect(subprocess.run([FAKE, "-d"], env=env, timeout=30).returncode == 0, "fake control daemon did not start")
    try:
        start_sluiced(h, "--mode", "mps", SLUICE_MPS_CONTROL=FAKE)
        wait_answering(h)
        mps = h.ctl_json("status")["daemon"]["mps"]
        expect(mps["state"] == "adopted" and mps["control"] == FAKE, f"status mps: {mps}")
        expect(h.stop_daemon() == 0, "sluiced exit code")
        expect("quit" not in control_log(h), "sluiced quit a control daemon it did not start")
        expect(fake_client(h, "get_server_list").returncode == 0, "the adopted control daemon is gone")
    finally:
        fake_client(h, "quit")


def test_control_daemon_that_dies_is_started_again(h):
    start_sluiced(h, "--mps", "--mps-control", FAKE, "--mps-check-ms", "50")
    wait_answering(h)
    pid_file = os.path.join(dirs(h)[0], "control.pid")
    first = int(open(pid_file).read())
    os.kill(first, signal.SIGKILL)
    mps = wait_for(lambda: (m := h.ctl_json("status")["daemon"]["mps"])["restarts"] >= 1 and m, 30,
                   "sluiced started its control daemon again")
    expect(mps["state"] == "started" and mps["restarts"] == 1, f"status mps: {mps}")
    expect(int(open(pid_file).read()) != first and fake_client(h, "get_server_list").returncode == 0,
           "no new control daemon answers")
    output = h.daemon_output()
    expect("stopped answering" in output and "started again (1 restart)" in output, f"sluiced's log:\n{output}")
    expect(h.stop_daemon() == 0, "sluiced exit code")
    expect(control_log(h).endswith("quit\nexiting\n"), f"the new control daemon was not quit:\n{control_log(h)}")


def test_failing_control_program_stops_sluiced_or_falls_back_with_auto(h):
    daemon = start_sluiced(h, "--mps", "--mps-control", FAKE, FAKE_MPS_START_FAIL=1)
    code = daemon.wait(timeout=60)
    h.daemon = None
    expect(code != 0, "sluiced ran without its MPS control daemon")
    output = h.daemon_output()
    expect("mps mode:" in output and "-d failed (exit code 1)" in output, f"sluiced's message:\n{output}")

    start_sluiced(h, "--mode", "auto", "--mps-control", FAKE, FAKE_MPS_START_FAIL=1)
    wait_answering(h)
    daemon_status = h.ctl_json("status")["daemon"]
    expect(daemon_status["mode"] == "timeslice" and daemon_status["mps"]["state"] == "unavailable",
           f"--mode auto: {daemon_status}")
    expect("running in timeslice mode" in h.daemon_output(), "no warning about the fallback")
    expect(h.stop_daemon() == 0, "sluiced exit code")

    missing = start_sluiced(h, "--mps", "--mps-control", os.path.join(h.work, "no-such-control"))
    expect(missing.wait(timeout=60) != 0, "sluiced ran without a control program")
    h.daemon = None
    expect("no-such-control: not found" in h.daemon_output(), f"sluiced's message:\n{h.daemon_output()}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(run_tests([
        test_mps_mode_starts_announces_partitions_and_quits,
        test_rt_arriving_behind_killable_best_effort_work_counts_a_kill,
        test_kill_word_of_a_registered_client_is_written_and_lowered,
        test_running_control_daemon_is_adopted_and_left_running,
        test_control_daemon_that_dies_is_started_again,
        test_failing_control_program_stops_sluiced_or_falls_back_with_auto,
    ], sys.argv[1]))
