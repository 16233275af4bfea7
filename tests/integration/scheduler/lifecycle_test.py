#!/usr/bin/env python3
"""sluiced with real client processes over the fake driver: client death, daemon restart, policy
reload, chunked copies under gating, and protocol misuse.

  lifecycle_test.py BUILD_DIR
"""

import json
import os
import signal
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (ABI_MAJOR, ROLE_SHIM, Control, expect, frame, hello, read_frame, run_tests,  # noqa: E402
                     wait_for)

RT_RULE = {"name": "loadgen-rt", "match": {"exe": "sluice-loadgen", "cmdline": "* rt *"}, "class": "rt"}
POLICY = {"version": 1, "scheduler": {"be_budget_us": 200, "holdoff_ms": 50}, "defaults": {"class": "be"},
          "rules": [RT_RULE]}


def long_rt(h):
    return h.client(["rt", "--kernel-us", "50", "--period-us", "2000", "--duration-s", "30"])


def long_be(h, kernel_us=5000, depth=4):
    return h.client(["be", "--kernel-us", str(kernel_us), "--grid", "132", "--depth", str(depth),
                     "--duration-s", "30"], label="be")


def test_client_death_reclaims_its_budget_within_100ms(h):
    h.start_daemon(POLICY)
    rt, a, b = long_rt(h), long_be(h), long_be(h)
    control = Control(h.socket)
    ps = lambda: {c["pid"]: c for c in control.request("ps")["clients"]}
    wait_for(lambda: len(ps()) == 3 and control.request("status")["devices"][0]["gate"] == "shut", 10,
             "three clients and a shut gate")
    # Wait until one BE client has its (solo) 5 ms kernel in flight while the other waits with work
    # queued and nothing in flight.
    def running_and_waiting():
        clients = ps()
        holder = [p for p in (a.pid, b.pid) if clients[p]["inflight_us"]]
        other = [p for p in (a.pid, b.pid) if not clients[p]["inflight_us"] and clients[p]["queued"] > 0]
        return (holder[0], other[0]) if len(holder) == 1 and other else None
    holder, other = wait_for(running_and_waiting, 10, "a BE kernel in flight while the other BE client waits")
    victim = a if holder == a.pid else b
    victim.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: holder not in ps() and ps()[other]["solo"], 2, "the survivor got the budget")
    elapsed_ms = (time.monotonic() - killed) * 1000
    expect(elapsed_ms < 100, f"budget reclaimed {elapsed_ms:.0f} ms after the client died (limit 100 ms)")
    print(f"    reclaimed after {elapsed_ms:.1f} ms")
    control.close()


def test_daemon_restart_clients_fall_back_then_reconnect(h):
    h.start_daemon(POLICY)
    be = h.client(["be", "--kernel-us", "500", "--grid", "132", "--depth", "4", "--duration-s", "6"], label="be")
    rt = h.client(["rt", "--kernel-us", "50", "--period-us", "2000", "--duration-s", "6"])
    wait_for(lambda: set(h.clients_by_pid()) == {be.pid, rt.pid}, 10, "both clients connected")
    expect(h.stop_daemon() == 0, "sluiced did not exit 0 on SIGTERM")
    time.sleep(0.5)
    expect(be.poll() is None and rt.poll() is None, "a client died with the daemon")
    h.start_daemon()
    clients = wait_for(lambda: (c := h.clients_by_pid()) and set(c) == {be.pid, rt.pid} and c, 5,
                       "both clients reconnected to the new daemon")
    expect(clients[rt.pid]["class"] == "rt" and clients[be.pid]["class"] == "be", f"classes after reconnect: {clients}")
    for proc in (be, rt):
        out, err = proc.communicate(timeout=30)
        expect(proc.returncode == 0, f"client failed: {err}")
    expect(json.loads(out)["latency_us"]["count"] > 100, "the RT client did not keep running")
    expect("passthrough" in err, "the client did not say it fell back to passthrough")


def test_sighup_reloads_atomically(h):
    h.start_daemon(POLICY)
    rt = long_rt(h)
    wait_for(lambda: h.clients_by_pid().get(rt.pid, {}).get("class") == "rt", 10, "RT client classified rt")
    h.write_policy({"version": 1, "defaults": {"class": "be", "priority": 3}})
    h.daemon.send_signal(signal.SIGHUP)
    wait_for(lambda: h.clients_by_pid()[rt.pid]["class"] == "be", 5, "class follows the reloaded policy")
    with open(h.policy_path, "w") as f:
        f.write('{"version": 1, "rules": [{"match": {"uid": "root"}, "class": "rt"}]}')
    h.daemon.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload failed" in h.daemon_output(), 5, "the daemon said why the reload failed")
    expect("/rules/0/match/uid" in h.daemon_output(), "the reload error does not name the JSON path")
    expect(h.clients_by_pid()[rt.pid]["class"] == "be", "a bad file changed the policy in force")
    reload = h.ctl("policy", "reload")
    expect(reload.returncode == 1 and "previous policy stays in force" in reload.stderr,
           f"sluicectl policy reload: {reload.returncode} {reload.stderr}")
    status = h.ctl_json("status")
    expect(status["policy"]["generation"] == 2 and "/rules/0/match/uid" in status["policy"]["last_reload_error"],
           f"status after a failed reload: {status['policy']}")


def test_chunked_copies_keep_order_while_gated(h):
    h.start_daemon(POLICY)
    rt = long_rt(h)
    wait_for(lambda: rt.pid in h.clients_by_pid(), 10, "RT client connected")
    stats = os.path.join(h.work, "copy-stats.json")
    trace = os.path.join(h.work, "copy-trace.json")
    copy = h.client(["--fake-trace", trace, "copy", "--mib", "64", "--repeat", "2"], label="be",
                    extra_env={"SLUICE_STATS_FILE": stats, "SLUICE_FAKE_TRACE": "1"})
    out, err = copy.communicate(timeout=120)
    expect(copy.returncode == 0, f"copy client failed ({copy.returncode}): {err}")
    result = json.loads(out)
    expect(result["ok"] and result["mismatches"] == 0, f"copy results wrong: {result}")
    counters = json.load(open(stats))
    chunked = counters.get("chunked_copies", counters.get("counters", {}).get("chunked_copies", 0))
    expect(chunked >= 4, f"large copies were not split: {counters}")
    records = [r for r in json.load(open(trace)) if r["kind"] in (2, 3)]  # copies and memsets
    # Per round: 64 MiB in 8 MiB chunks up, one memset, 8 chunks down; each starts after the last ended.
    expect(len(records) >= 2 * (8 + 1 + 8), f"expected at least 34 copy/memset operations, got {len(records)}")
    by_submit = sorted(records, key=lambda r: r["submit_ns"])
    for earlier, later in zip(by_submit, by_submit[1:]):
        expect(later["start_ns"] >= earlier["end_ns"], f"{later['name']} started before {earlier['name']} ended")
    print(f"    {len(records)} copy/memset operations in order, {chunked} copies split")


def test_protocol_misuse_never_hurts_the_daemon(h):
    h.start_daemon(POLICY)
    # A client of another protocol version is refused with a reason.
    s = socket.socket(socket.AF_UNIX)
    s.connect(h.socket)
    s.sendall(frame(hello(role=ROLE_SHIM, major=ABI_MAJOR + 1)))
    welcome = read_frame(s)
    status = struct.unpack_from("<i", welcome, 8)[0]
    reason = welcome[40:].split(b"\0")[0].decode()
    expect(status == 1 and "protocol" in reason, f"version mismatch answer: status {status} '{reason}'")
    s.close()
    # Garbage, a huge frame, a half frame: each connection is closed, the daemon lives on.
    for junk in (frame(b"\x01" * 112), struct.pack("<I", 1 << 31), b"\x05\x00"):
        s = socket.socket(socket.AF_UNIX)
        s.connect(h.socket)
        s.sendall(junk)
        s.close()
    # A control client that sends many requests before reading any: the replies wait in sluiced's
    # outbox (more than a socket buffer holds) and all arrive, in order.
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(h.socket)
    s.sendall(frame(hello()))
    for i in range(300):
        s.sendall(frame(json.dumps({"cmd": "policy" if i % 2 else "status"}).encode()))
    replies = [json.loads(read_frame(s)) for _ in range(300)]
    expect(all(r["ok"] for r in replies) and "daemon" in replies[0] and "policy" in replies[1],
           "queued control replies were lost or reordered")
    s.close()
    control = Control(h.socket)
    bad = control.request("frobnicate")
    expect(not bad["ok"] and bad["code"] == "bad_request", f"unknown command answer: {bad}")
    expect(control.request("status")["ok"], "the daemon stopped answering")
    control.close()
    expect(h.daemon.poll() is None, "sluiced died")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(run_tests([
        test_client_death_reclaims_its_budget_within_100ms,
        test_daemon_restart_clients_fall_back_then_reconnect,
        test_sighup_reloads_atomically,
        test_chunked_copies_keep_order_while_gated,
        test_protocol_misuse_never_hurts_the_daemon,
    ], sys.argv[1]))
