#!/usr/bin/env python3
"""Faults survived and nothing lost: sluiced and sluice-acct-client processes under libsluice.so
over the fake driver. Every test ends with the exactly-once accounting of accounting.py.

  fault_test.py BUILD_DIR [TEST_NAME_PART...]
"""

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "scheduler"))
import accounting  # noqa: E402
from harness import (ABI_MAJOR, ROLE_SHIM, expect, frame, hello, read_frame, run_tests, wait_for)  # noqa: E402

RT_RULE = {"name": "acct-rt", "match": {"exe": "sluice-acct-client", "cmdline": "* rt *"}, "class": "rt"}
POLICY = {"version": 1, "scheduler": {"be_budget_us": 300, "holdoff_ms": 20}, "defaults": {"class": "be"},
          "rules": [RT_RULE]}
# RT launches are never held; a launch call whose own time in the shim is longer than this, and
# that blocked, waited on something. Generous, so that a loaded 2-core machine does not make it
# flaky: a launch call costs microseconds.
RT_LAUNCH_CALL_BOUND_US = 50_000
RT_LAUNCH_CALL_P99_BOUND_US = 5_000


class Clients:
    """sluice-acct-client processes of one test and their accounting files."""

    def __init__(self, h):
        self.h = h
        self.binary = os.path.join(h.build, "tests", "integration", "reliability", "sluice-acct-client")
        self.running = []  # (proc, files)

    def start(self, role, duration_s, tag=None, env=None, **options):
        tag = tag or f"{role}-{len(self.running)}"
        files = accounting.client_files(self.h.work, tag)
        args = ["--role", role, "--duration-s", str(duration_s), "--out", files["out"]]
        for key, value in options.items():
            args += [f"--{key.replace('_', '-')}", str(value)]
        extra = {"LD_PRELOAD": self.h.bin["shim"], "SLUICE_REAL_LIBCUDA": self.h.bin["fake"],
                 "ASAN_OPTIONS": "detect_leaks=0:verify_asan_link_order=0", **accounting.client_env(files),
                 **(env or {})}
        proc = subprocess.Popen([self.binary, *args], env=self.h.env(**extra), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        self.h.clients.append(proc)
        self.running.append((proc, files))
        return proc

    def finish(self, timeout=120, exclude=()):
        """Waits for every client not in `exclude`; returns the accounting totals and stderr by pid."""
        stderr = {}
        for proc, files in self.running:
            if proc in exclude:
                continue
            _, err = proc.communicate(timeout=timeout)
            stderr[proc.pid] = err
            result = accounting.load_json(files["out"])
            expect(proc.returncode == 0, f"client {proc.pid} exited {proc.returncode}: {result} {err[-2000:]}")
        totals = accounting.check([files for proc, files in self.running if proc not in exclude])
        return totals, stderr


def report(totals, what=""):
    print(f"    {what}{totals['clients']} clients: {totals['launched']} launched, {totals['executed']} executed, "
          f"{totals['failed']} failed, {totals['lost']} lost, {totals['duplicated']} duplicated, {totals['held']} held")


def test_accounting_without_faults(h):
    h.start_daemon(POLICY)
    clients = Clients(h)
    clients.start("rt", 2, period_us=2000, kernel_us=50)
    for _ in range(2):
        clients.start("be", 2, kernel_us=300, depth=8)
    totals, _ = clients.finish()
    expect(totals["held"] > 0, "no BE launch was ever held: the gate did not act, so the test proves little")
    report(totals)


def test_client_sigkill_mid_launch_leaves_others_whole(h):
    h.start_daemon(POLICY)
    clients = Clients(h)
    rt = clients.start("rt", 4, period_us=2000, kernel_us=50)
    survivors = [clients.start("be", 4, kernel_us=300, depth=8) for _ in range(2)]
    wait_for(lambda: len(h.clients_by_pid()) == 3, 10, "three clients connected")
    victims = []
    for i in range(4):  # BE victims killed while launching, with work held and in flight
        victim = clients.start("be", 30, tag=f"victim-{i}", kernel_us=200, depth=16)
        wait_for(lambda: h.clients_by_pid().get(victim.pid, {}).get("queued", 0) > 0 or
                 h.clients_by_pid().get(victim.pid, {}).get("inflight_us", 0) > 0, 10, "the victim has work")
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        victims.append(victim)
        wait_for(lambda: victim.pid not in h.clients_by_pid(), 2, "sluiced dropped the dead client")
    totals, _ = clients.finish(exclude=victims)
    expect(totals["clients"] == 3, f"accounted {totals['clients']} clients")
    expect(h.daemon.poll() is None, "sluiced died")
    report(totals, f"{len(victims)} clients killed mid-launch; survivors: ")
    del rt, survivors


def test_daemon_sigkill_under_load_8_clients(h):
    h.start_daemon(POLICY)
    clients = Clients(h)
    started_at = time.monotonic()  # the clients' runs begin a little later
    rts = [clients.start("rt", 8, period_us=2000, kernel_us=50) for _ in range(2)]
    for _ in range(6):
        clients.start("be", 8, kernel_us=300, depth=8)
    wait_for(lambda: len(h.clients_by_pid()) == 8, 10, "eight clients connected")
    time.sleep(1)
    killed_at = time.monotonic()
    expect(h.stop_daemon(signal.SIGKILL) == -signal.SIGKILL, "sluiced was not killed")
    time.sleep(2)  # clients run in passthrough
    back_at = time.monotonic()
    h.start_daemon()
    wait_for(lambda: len(h.clients_by_pid()) == 8, 10, "all eight clients reconnected")
    totals, stderr = clients.finish()
    for proc in rts:
        expect("passthrough" in stderr[proc.pid], "an RT client did not say it fell back to passthrough")
    # RT launches never wait on sluiced: the shim submitted every one on the calling thread (none
    # held, none waiting for the gate), and the shim's own time in the calls stays small. The own
    # time is the call's less the thread's run-queue wait and its time inside the (fake) driver:
    # on a 2-core machine with eight clients, the OS, a virtual machine's stolen time and the fake
    # device's cross-process futex each stall single calls for 100 ms, and none of that is sluice.
    # A call that stays slow after that must also have blocked (a voluntary context switch) to
    # count as a wait.
    rt = [c for c in totals["per_client"] if c["role"] == "rt"]
    for c in rt:
        expect(c["slowest_own_call"] is not None, f"RT client {c['pid']} could not tell the shim's time apart")
        expect(c["held"] == 0 and c["waited"] == 0,
               f"RT client {c['pid']}: {c['held']} launches held, {c['waited']} calls waited for the gate")
    rt_p99 = max(c["launch_call_own_p99_us"] for c in rt)
    expect(rt_p99 < RT_LAUNCH_CALL_P99_BOUND_US, f"RT launch calls: p99 {rt_p99:.0f} us of the shim's own time")
    slowest = max(rt, key=lambda c: c["slowest_own_call"]["us"])
    worst = slowest["slowest_own_call"]
    rt_call_wall_max = max(c["launch_call_max_us"] for c in rt)
    expect(worst["us"] < RT_LAUNCH_CALL_BOUND_US or worst["voluntary_switches"] == 0,
           f"an RT launch call spent {worst['us']:.0f} us in the shim and blocked {worst['voluntary_switches']} "
           f"times, while sluiced was dead or restarting: pid {slowest['pid']}, {worst['at_s']} s into its run "
           f"(sluiced killed at {killed_at - started_at:.1f} s, back at {back_at - started_at:.1f} s)")
    report(totals)
    print(f"    RT launch calls across the daemon's death and restart: shim's own time p99 {rt_p99:.0f} us, "
          f"max {worst['us']:.0f} us ({worst['voluntary_switches']} blocking switches); wall max "
          f"{rt_call_wall_max:.0f} us; 0 held, 0 waited")


def test_stalled_daemon_full_ring_backpressure_is_bounded(h):
    h.start_daemon(POLICY)
    clients = Clients(h)
    # Short kernels, deep queue: a message per launch fills the 4096-slot ring within a second
    # once sluiced stops reading it.
    be = clients.start("be", 6, kernel_us=20, depth=32)
    wait_for(lambda: be.pid in h.clients_by_pid(), 10, "the BE client connected")
    h.daemon.send_signal(signal.SIGSTOP)
    time.sleep(2)
    h.daemon.send_signal(signal.SIGCONT)
    totals, stderr = clients.finish()
    call_max = totals["per_client"][0]["launch_call_max_us"]
    expect("ring to sluiced is full" in stderr[be.pid], "the ring never filled: the test proves nothing")
    # One bounded wait (100 ms) for room, then no more waiting while the ring stays full.
    expect(call_max < 1_000_000, f"a launch call waited {call_max / 1000:.0f} ms on a full ring")
    expect(h.daemon.poll() is None, "sluiced died after SIGCONT")
    report(totals, f"launch call max {call_max / 1000:.1f} ms with sluiced stopped 2 s; ")


def _fake_daemon(h, answer):
    """A socket at h.socket that answers every shim hello with `answer(hello_bytes)` (bytes, fds)."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(h.socket)
    server.listen(16)
    server.settimeout(0.2)
    return server


def _serve_once(server, answer, deadline):
    while time.time() < deadline:
        try:
            conn, _ = server.accept()
        except socket.timeout:
            continue
        conn.settimeout(2)
        try:
            payload = read_frame(conn)
            role = struct.unpack_from("<I", payload, 8)[0]
            if role != ROLE_SHIM:
                conn.close()  # the control request of the driver environment: no daemon of ours
                continue
            data, fds = answer(payload)
            message = struct.pack("<I", len(data)) + data
            if fds:
                socket.send_fds(conn, [message], fds)
                for fd in fds:
                    os.close(fd)
            else:
                conn.sendall(message)
            return conn
        except (OSError, ConnectionError):
            conn.close()
    raise AssertionError("no shim connected to the fake daemon")


def welcome(status, major, minor, reason=b"", segment_bytes=0, epoch=1):
    # layout.h: Welcome (magic, major, minor, status, client id, epoch, segment bytes, class, reason)
    return struct.pack("<IHHiIQQB7x160s", 0x45434C53, major, minor, status, 1, epoch, segment_bytes, 0, reason)


def test_protocol_version_mismatch_both_ways_falls_back_to_passthrough(h):
    # Client newer or older than sluiced: sluiced refuses the hello with a reason.
    h.start_daemon(POLICY)
    for major in (ABI_MAJOR + 1, ABI_MAJOR - 1):
        s = socket.socket(socket.AF_UNIX)
        s.connect(h.socket)
        s.sendall(frame(hello(role=ROLE_SHIM, major=major)))
        answer = read_frame(s)
        status = struct.unpack_from("<i", answer, 8)[0]
        reason = answer[40:].split(b"\0")[0].decode()
        expect(status == 1 and f"the client {major}." in reason, f"hello of major {major}: status {status} '{reason}'")
        s.close()
    h.stop_daemon()
    os.unlink(h.socket) if os.path.exists(h.socket) else None
    # The real shim against a daemon that speaks another version, both ways: a newer daemon refuses
    # the hello; an older one that does not check hands over a segment of its own ABI.
    newer = lambda _: (welcome(1, ABI_MAJOR + 1, 0, b"sluiced speaks protocol 2.0, the client 1.2"), [])

    def older_segment(_):
        fd = os.memfd_create("segment")
        header = struct.pack("<IHHII", 0x45434C53, ABI_MAJOR - 1, 9, 4096, 128) + b"\0" * (4096 - 16)
        os.write(fd, header + b"\0" * 4096)
        a, b = os.eventfd(0), os.eventfd(0)
        return welcome(0, ABI_MAJOR - 1, 9, segment_bytes=8192), [fd, a, b]

    for name, answer, expected in (("newer", newer, "sluiced refused the connection: sluiced speaks protocol 2.0"),
                                   ("older", older_segment, f"segment ABI {ABI_MAJOR - 1}.9, this client speaks")):
        server = _fake_daemon(h, answer)
        clients = Clients(h)
        proc = clients.start("be", 1, tag=f"mismatch-{name}", kernel_us=100, depth=4)
        conn = _serve_once(server, answer, time.time() + 10)
        totals, stderr = clients.finish()
        conn.close()
        server.close()
        os.unlink(h.socket)
        err = stderr[proc.pid]
        expect(expected in err, f"daemon {name}: the client did not say why: {err[-1500:]}")
        expect("passthrough" in err, f"daemon {name}: the client did not say it runs in passthrough: {err[-1500:]}")
        report(totals, f"daemon {name}: ")


def test_bad_policy_reload_keeps_the_old_policy(h):
    h.start_daemon(POLICY)
    clients = Clients(h)
    rt = clients.start("rt", 6, period_us=2000, kernel_us=50)
    wait_for(lambda: h.clients_by_pid().get(rt.pid, {}).get("class") == "rt", 10, "RT client classified rt")
    cases = [("invalid JSON", '{"version": 1, "rules": [', "policy.json"),
             ("unknown field", json.dumps({**POLICY, "scheduler": {"be_budget_us": 300, "frobnicate": 1}}),
              "/scheduler/frobnicate"),
             ("wrong type", json.dumps({**POLICY, "scheduler": {"holdoff_ms": "soon"}}), "/scheduler/holdoff_ms")]
    for what, text, names in cases:
        with open(h.policy_path, "w") as f:
            f.write(text)
        reload = h.ctl("policy", "reload")
        expect(reload.returncode == 1 and names in reload.stderr,
               f"{what}: sluicectl policy reload exited {reload.returncode}: {reload.stderr.strip()}")
        expect(h.clients_by_pid()[rt.pid]["class"] == "rt", f"{what}: the old policy is no longer in force")
        print(f"    {what}: {reload.stderr.strip().splitlines()[0][:150]}")
    totals, _ = clients.finish()
    report(totals)


def test_hostile_client_is_evicted_and_others_keep_being_scheduled(h):
    h.start_daemon(POLICY)
    clients = Clients(h)
    rt = clients.start("rt", 8, period_us=2000, kernel_us=50)
    be = clients.start("be", 8, kernel_us=300, depth=8)
    wait_for(lambda: len(h.clients_by_pid()) == 2, 10, "the well-behaved clients connected")
    hostile = os.path.join(h.build, "tests", "integration", "reliability", "sluice-hostile-client")
    run = subprocess.run([hostile, h.socket, "garbage", "forged", "head", "tail", "shrink"], capture_output=True, text=True,
                         timeout=120)
    expect(run.returncode == 0, f"sluice-hostile-client failed: {run.stderr}")
    modes = {m["mode"]: m for m in map(json.loads, run.stdout.splitlines())}
    for mode in ("garbage", "head"):
        expect(modes[mode]["evicted"], f"sluiced did not evict the {mode} client: {modes[mode]}")
    log = h.daemon_output()
    expect("evicted: too many bad messages" in log, "no logged reason for evicting the garbage client")
    expect("evicted: the head index of its ring" in log, "no logged reason for evicting the head client")
    expect(modes["shrink"]["shrink"] != "truncated", f"a client could truncate its segment under sluiced: {modes}")
    expect(h.daemon.poll() is None, "sluiced died")
    expect(set(h.clients_by_pid()) >= {rt.pid, be.pid}, "a well-behaved client lost its connection")
    totals, _ = clients.finish()
    be_figures = next(c for c in totals["per_client"] if c["role"] == "be")
    expect(be_figures["forced_releases"] == 0,
           f"the BE client's work was held past the hold limit while the hostile client ran: {be_figures}")
    report(totals, "hostile modes " + ", ".join(f"{m}: {v['published']} published, evicted {v['evicted']}"
                                                 for m, v in modes.items()) + "; ")


def as_nobody(*cmd, groups=None):
    """Runs cmd as uid/gid 65534 (nobody), with no supplementary groups or the given ones."""
    prefix = ["setpriv", "--reuid", "65534", "--regid", "65534"]
    prefix += ["--groups", ",".join(map(str, groups))] if groups else ["--clear-groups"]
    return subprocess.run(prefix + list(cmd), capture_output=True, text=True, timeout=30)


def daemon_for_a_second_uid(h, *args):
    """sluiced with args, its socket's directory reachable by every user (as /run/sluice is);
    False where this process cannot act as another uid."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        print("    skipped: needs root and setpriv (util-linux) to act as a second uid")
        return False
    h.start_daemon(POLICY, args=("--gpu", "0", *args))
    os.chmod(h.work, 0o755)
    return True


def test_permissions_of_another_uid(h):
    admin_gid = 4242
    if not daemon_for_a_second_uid(h, "--admin-group", str(admin_gid)):
        return
    clients = Clients(h)
    rt = clients.start("rt", 6, period_us=2000, kernel_us=50)
    wait_for(lambda: h.clients_by_pid().get(rt.pid, {}).get("class") == "rt", 10, "root's RT client connected")
    ctl = [h.bin["sluicectl"], "--socket", h.socket]
    mode = os.stat(h.socket).st_mode & 0o777
    expect(mode == 0o666, f"socket mode {mode:o}: clients of every user must be able to connect")
    # Another uid may look but not steer: mutating requests are refused with exit status 4.
    expect(as_nobody(*ctl, "status").returncode == 0, "another uid cannot even read the status")
    reload = as_nobody(*ctl, "policy", "reload")
    expect(reload.returncode == 4, f"another uid reloaded the policy: {reload.returncode} {reload.stderr}")
    steer = as_nobody(*ctl, "set-class", str(rt.pid), "be")
    expect(steer.returncode == 4, f"another uid changed root's client: {steer.returncode} {steer.stderr}")
    expect(h.clients_by_pid()[rt.pid]["class"] == "rt", "root's client changed class")
    # Its segment is a memfd that only the client and sluiced hold: another uid cannot open it
    # through /proc, and nothing of sluice's lies in /dev/shm.
    with open(f"/proc/{h.daemon.pid}/maps") as maps:
        segments = [line for line in maps if "memfd:sluice-client-" in line]
    expect(segments, "sluiced maps no client memfd")
    expect(not [n for n in os.listdir("/dev/shm") if "sluice" in n], "sluice files in /dev/shm")
    probe = ("import os,sys\nopened=[]\nfor d in sys.argv[1:]:\n"
             "  try: names=os.listdir(d)\n  except OSError: continue\n"
             "  for n in names:\n    try: os.close(os.open(os.path.join(d,n),os.O_RDONLY)); opened.append(n)\n"
             "    except OSError: pass\nprint(len(opened))")
    opened = as_nobody(sys.executable, "-c", probe, f"/proc/{h.daemon.pid}/fd", f"/proc/{rt.pid}/fd",
                       f"/proc/{rt.pid}/map_files")
    expect(opened.returncode == 0 and opened.stdout.strip() == "0",
           f"another uid opened sluiced's or a client's descriptors: {opened.stdout} {opened.stderr}")
    # A member of --admin-group may steer.
    steer = as_nobody(*ctl, "set-class", str(rt.pid), "be", groups=[admin_gid])
    expect(steer.returncode == 0, f"a member of the admin group was refused: {steer.returncode} {steer.stderr}")
    expect(h.clients_by_pid()[rt.pid]["class"] == "be", "set-class by the admin group did not apply")
    back = as_nobody(*ctl, "set-class", str(rt.pid), "policy", groups=[admin_gid])
    reload = as_nobody(*ctl, "policy", "reload", groups=[admin_gid])
    expect(back.returncode == 0 and reload.returncode == 0, f"admin group: {back.stderr} {reload.stderr}")
    totals, _ = clients.finish()
    report(totals)
    print("    another uid: status 0, reload 4, set-class 4, /proc descriptors 0 opened; admin group: 0")


def test_socket_group_makes_the_socket_0660(h):
    group = 4243
    if not daemon_for_a_second_uid(h, "--socket-group", str(group)):
        return
    st = os.stat(h.socket)
    expect(st.st_mode & 0o777 == 0o660 and st.st_gid == group,
           f"socket mode {st.st_mode & 0o777:o} group {st.st_gid}: expected 660 and group {group}")
    ctl = [h.bin["sluicectl"], "--socket", h.socket, "status"]
    outsider = as_nobody(*ctl)
    expect(outsider.returncode == 4, f"a uid outside the socket's group was not refused permission: {outsider.returncode}")
    member = as_nobody(*ctl, groups=[group])
    expect(member.returncode == 0, f"a member of the socket's group was refused: {member.returncode} {member.stderr}")
    print(f"    --socket-group {group}: mode 660, outsider exit {outsider.returncode}, member exit 0")


# PTX that the driver loads (one entry, a u64 parameter) but that the kill rewriter cannot
# instrument: its body is not PTX.
BAD_PTX = """.version 7.8
.target sm_75
.address_size 64

.visible .entry sluice_spin_bad(
	.param .u64 sluice_spin_bad_param_0
)
{
	this is not ptx at all {{ ;
	ret;
}
"""
# A fatbin header (magic 0xBA55ED50, version 1, header size 16, a size) over an entry of garbage.
CORRUPT_FATBIN = struct.pack("<IHHQ", 0xBA55ED50, 1, 16, 64) + bytes(range(7, 71))


def test_bad_ptx_and_corrupt_fatbin_in_the_kill_path_run_uninstrumented(h):
    policy = {**POLICY, "rules": [RT_RULE, {"name": "batch", "match": {"label": "batch"}, "class": "be",
                                              "kill": True}]}
    h.start_daemon(policy)
    ptx, fatbin = os.path.join(h.work, "bad.ptx"), os.path.join(h.work, "corrupt.fatbin")
    with open(ptx, "w") as f:
        f.write(BAD_PTX)
    with open(fatbin, "wb") as f:
        f.write(CORRUPT_FATBIN)
    clients = Clients(h)
    be = clients.start("be", 3, kernel_us=300, depth=4, ptx=ptx, kernel="sluice_spin_bad", extra_module=fatbin,
                       env={"SLUICE_CLASS": "batch", "SLUICE_KILL": "1", "SLUICE_KILL_MIN_US": "0",
                            "SLUICE_KILL_CACHE": os.path.join(h.work, "twins")})
    clients.start("rt", 3, period_us=2000, kernel_us=50)
    totals, stderr = clients.finish()
    err = stderr[be.pid]
    expect("cannot instrument a module" in err, f"the shim did not say why the PTX runs uninstrumented: {err[-2000:]}")
    expect("cannot read the PTX of a module" in err or "corrupt.fatbin: loaded" in err,
           f"the corrupt fatbin: {err[-2000:]}")
    shim = json.load(open(accounting.client_files(h.work, "be-0")["shim"]))
    expect(shim["kill"]["twin_launches"] == 0, f"a twin ran from PTX that could not be instrumented: {shim['kill']}")
    report(totals, "bad PTX and a corrupt fatbin with SLUICE_KILL=1: uninstrumented, ")
    print("    " + "; ".join(line for line in err.splitlines() if "kill:" in line or "extra module" in line)[:400])


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    chosen = sys.argv[2:]  # optional: names (or parts of names) of the tests to run
    sys.exit(run_tests([t for t in [
        test_accounting_without_faults,
        test_client_sigkill_mid_launch_leaves_others_whole,
        test_daemon_sigkill_under_load_8_clients,
        test_stalled_daemon_full_ring_backpressure_is_bounded,
        test_protocol_version_mismatch_both_ways_falls_back_to_passthrough,
        test_bad_policy_reload_keeps_the_old_policy,
        test_hostile_client_is_evicted_and_others_keep_being_scheduled,
        test_permissions_of_another_uid,
        test_socket_group_makes_the_socket_0660,
        test_bad_ptx_and_corrupt_fatbin_in_the_kill_path_run_uninstrumented,
    ] if not chosen or any(c in t.__name__ for c in chosen)], sys.argv[1]))
