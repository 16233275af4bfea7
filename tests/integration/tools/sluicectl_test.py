#!/usr/bin/env python3
"""sluicectl against a running sluiced with clients over the fake driver: the human and --json forms
of every read command, set-class, policy validate/show/reload, and the exit codes.

  sluicectl_test.py BUILD_DIR
"""

import json
import os
import pty
import re
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scheduler"))
from harness import expect, run_tests, wait_for  # noqa: E402

POLICY = {"version": 1, "scheduler": {"be_budget_us": 200, "holdoff_ms": 50, "sharing": "fifo"},
          "defaults": {"class": "be"},
          "rules": [{"name": "loadgen-rt", "match": {"exe": "sluice-loadgen", "cmdline": "* rt *"}, "class": "rt"}]}
OK, FAILED, BAD_INPUT, UNREACHABLE, PERMISSION, NOT_FOUND = 0, 1, 2, 3, 4, 5


def start(h):
    h.start_daemon(POLICY)
    rt = h.client(["rt", "--kernel-us", "50", "--period-us", "2000", "--duration-s", "30"])
    be = h.client(["be", "--kernel-us", "3000", "--grid", "132", "--depth", "4", "--duration-s", "30"], label="be")
    wait_for(lambda: len((h.ctl_json("queue") or {"queue": []})["queue"]) > 0 and len(h.clients_by_pid()) == 2, 10,
             "both clients connected and BE work waiting")
    return rt, be


def run(h, *args, code=OK):
    result = h.ctl(*args)
    expect(result.returncode == code, f"sluicectl {' '.join(args)}: exit {result.returncode}, expected {code}\n"
                                      f"stdout: {result.stdout}\nstderr: {result.stderr}")
    return result


def test_read_commands_human(h):
    rt, be = start(h)
    status = run(h, "status").stdout
    for text in ("sluiced pid", "protocol 1.", f"policy {h.policy_path}", "sharing fifo", "mode timeslice",
                 "clients: 2 (1 rt, 1 be)", "device 0: gate shut (", "  route full GPU"):
        expect(text in status, f"status lacks '{text}':\n{status}")
    # The RT client launches a 50 us kernel every 2 ms: at any instant it is either busy or idle
    # within the 50 ms hold-off. Both keep the gate shut; which one the status caught is chance.
    expect(re.search(r"device 0: gate shut \((RT active, \d+ busy|RT idle for \d+ ms)\)", status),
           f"device line:\n{status}")
    ps = run(h, "ps").stdout.splitlines()
    expect(ps[0].split()[:3] == ["PID", "CLASS", "PRI"], f"ps header: {ps[0]}")
    rows = {int(line.split()[0]): line.split() for line in ps[1:]}
    expect(rows[rt.pid][1].startswith("rt") and rows[be.pid][1].startswith("be"), f"ps rows: {ps}")
    expect(rows[rt.pid][-1] == "sluice-loadgen", f"ps exe column: {rows[rt.pid]}")
    queue = run(h, "queue").stdout.splitlines()
    expect("PREDICTED" in queue[0], f"queue header: {queue[0]}")
    waiting = [line for line in queue[1:] if "sluice_spin" in line]
    expect(waiting and all(str(be.pid) in line and "132x1x1" in line and "32x1x1" in line for line in waiting),
           f"queue rows: {queue}")
    top = run(h, "top", "--count", "1").stdout
    expect("sluiced pid" in top and "PID" in top and "PREDICTED" in top, f"top output:\n{top}")
    policy = run(h, "policy", "show").stdout
    expect(policy.startswith(f"# {h.policy_path}") and '"loadgen-rt"' in policy, f"policy show:\n{policy}")


def test_read_commands_json(h):
    rt, be = start(h)
    status = json.loads(run(h, "status", "--json").stdout)
    expect(status["ok"] and status["clients"] == {"total": 2, "rt": 1, "be": 1}, f"status clients: {status['clients']}")
    expect(status["devices"][0]["gate"] == "shut" and status["devices"][0]["budget_us"] == 200.0,
           f"status devices: {status['devices']}")
    expect(status["scheduler"]["idle_budget_us"] is None, "an unlimited budget is not null in JSON")
    expect(status["daemon"]["mode"] == "timeslice" and status["daemon"]["mps"] is None, f"mode: {status['daemon']}")
    device = status["devices"][0]
    expect(device["route"] == "full" and device["partition_sms"] == 0 and device["kill_epoch"] == 0,
           f"timeslice mode never partitions: {device}")
    ps = {c["pid"]: c for c in json.loads(run(h, "ps", "--json").stdout)["clients"]}
    expect(ps[rt.pid]["class"] == "rt" and ps[rt.pid]["rule"] == "loadgen-rt", f"ps rt: {ps[rt.pid]}")
    expect(ps[be.pid]["class"] == "be" and ps[be.pid]["label"] == "be", f"ps be: {ps[be.pid]}")
    expect(ps[be.pid]["kills"] == 0 and ps[be.pid]["kill"] is False, f"ps be kills: {ps[be.pid]}")
    queue = json.loads(run(h, "queue", "--json", "--limit", "2").stdout)
    entry = queue["queue"][0]
    expect(entry["name"] == "sluice_spin" and entry["grid"] == [132, 1, 1] and entry["predicted_us"] > 0
           and entry["pid"] == be.pid, f"queue entry: {entry}")
    expect(len(queue["queue"]) <= 2, "--limit ignored")
    lines = run(h, "top", "--json", "--count", "2", "--interval", "0.05").stdout.splitlines()
    expect(len(lines) == 2 and all(set(json.loads(l)) == {"status", "ps", "queue"} for l in lines), f"top --json: {lines}")
    policy = json.loads(run(h, "policy", "show", "--json").stdout)
    expect(policy["policy"]["rules"][0]["name"] == "loadgen-rt" and policy["generation"] == 1, f"policy: {policy}")


def test_top_once_and_live(h):
    rt, be = start(h)
    once = run(h, "top", "--once")
    frame = once.stdout
    expect("\x1b" not in frame and "\x1b" not in once.stderr, f"top --once wrote escape codes: {frame!r}")
    for text in ("sluiced pid", "clients: 2 (1 rt, 1 be)", "GPU%", "QUEUED", "KILLS", "kills: 0 total", "PREDICTED"):
        expect(text in frame, f"top --once lacks '{text}':\n{frame}")
    lines = frame.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["PID", "CLASS"])
    kills = next(i for i, line in enumerate(lines) if line.startswith("kills: "))
    rows = {int(line.split()[0]): line.split() for line in lines[header + 1:kills]}
    expect(rows[rt.pid][1].startswith("rt") and rows[be.pid][1].startswith("be"), f"top --once rows:\n{frame}")
    expect(frame.count("sluiced pid") == 1, f"more than one frame:\n{frame}")
    # On a terminal: cleared once, then every frame redrawn from the home position, lines cleared
    # to their end and the rest of the screen cleared, so nothing scrolls.
    primary, secondary = pty.openpty()
    proc = subprocess.Popen([h.bin["sluicectl"], "--socket", h.socket, "top", "--count", "2", "--interval", "0.05"],
                            env=h.env(), stdout=secondary, stderr=subprocess.PIPE)
    os.close(secondary)
    output = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # the terminal's other side closed
            break
        if not chunk:
            break
        output += chunk
    os.close(primary)
    expect(proc.wait(timeout=30) == OK, f"live top exit {proc.returncode}")
    text = output.decode(errors="replace")
    expect(text.startswith("\x1b[2J") and text.count("\x1b[2J") == 1 and text.count("\x1b[H") == 2
           and text.count("\x1b[J") == 2 and "\x1b[K" in text, f"live top escapes: {text[:300]!r}")
    expect("; in the last 0.1s: " in text or "; in the last 0.0s: " in text, f"second frame lacks recent kills:\n{text}")


def test_set_class(h):
    rt, be = start(h)
    result = json.loads(run(h, "set-class", str(rt.pid), "be", "--json").stdout)
    expect(result["class"] == "be" and result["rule"] == "set-class", f"set-class reply: {result}")
    client = h.clients_by_pid()[rt.pid]
    expect(client["class"] == "be" and client["overridden"], f"after set-class: {client}")
    expect("ok class=rt" in run(h, "set-class", str(rt.pid), "policy").stdout, "set-class policy did not undo")
    run(h, "set-class", "999999", "be", code=NOT_FOUND)
    run(h, "set-class", str(rt.pid), "gold", code=BAD_INPUT)
    run(h, "set-class", "notapid", "be", code=BAD_INPUT)


def test_policy_validate(h):
    good = os.path.join(h.work, "good.json")
    bad = os.path.join(h.work, "bad.json")
    json.dump(POLICY, open(good, "w"))
    open(bad, "w").write('{"version": 1, "rules": [{"match": {"uid": "root"}, "class": "rt"}]}')
    expect("valid (version 1, 1 rules, sharing fifo)" in run(h, "policy", "validate", good).stdout, "validate good")
    result = run(h, "policy", "validate", bad, code=BAD_INPUT)
    expect(f"{bad}: /rules/0/match/uid: expected an unsigned integer" in result.stderr, f"validate bad: {result.stderr}")
    reply = json.loads(run(h, "policy", "validate", bad, "--json", code=BAD_INPUT).stdout)
    expect(not reply["ok"] and "/rules/0/match/uid" in reply["error"], f"validate --json: {reply}")
    run(h, "policy", "validate", os.path.join(h.work, "missing.json"), code=BAD_INPUT)
    run(h, "bogus-command", code=BAD_INPUT)


def test_exit_codes_unreachable_and_permission(h):
    result = run(h, "status", code=UNREACHABLE)
    expect("not reachable" in result.stderr, f"unreachable message: {result.stderr}")
    expect(json.loads(run(h, "ps", "--json", code=UNREACHABLE).stdout)["ok"] is False, "unreachable --json")
    if os.geteuid() != 0:
        print("    (not root: the permission checks need another uid; skipped)")
        return
    h.start_daemon(POLICY)
    nobody = lambda: (os.setgid(65534), os.setuid(65534))
    # The socket's directory is private to the daemon's user: connecting is refused by the kernel.
    denied = h.ctl("status", preexec_fn=nobody)
    expect(denied.returncode == PERMISSION and "permission denied" in denied.stderr,
           f"connect as nobody: {denied.returncode} {denied.stderr}")
    # A reachable socket: reading is allowed, changing the policy is not.
    os.chmod(h.work, 0o755)
    expect(h.ctl("status", preexec_fn=nobody).returncode == OK, "nobody could not read the status")
    reload = h.ctl("policy", "reload", preexec_fn=nobody)
    expect(reload.returncode == PERMISSION and "needs root" in reload.stderr, f"reload as nobody: {reload.stderr}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(run_tests([test_read_commands_human, test_read_commands_json, test_top_once_and_live, test_set_class, test_policy_validate,
                        test_exit_codes_unreachable_and_permission], sys.argv[1]))
