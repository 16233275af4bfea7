#!/usr/bin/env python3
"""Kill in the client end to end: a best-effort program under libsluice.so with SLUICE_KILL=1 runs
long spin kernels from a PTX module as instrumented twins and registers its kill word; sluiced (its
rule says "kill": true) opens the word through the IPC handle and raises it when an RT client
arrives behind the BE work, then lowers it; the BE program still completes every launch. Over the
fake driver, one shared fake device.

  shim_kill_test.py BUILD_DIR
"""

import json
import os
import signal
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "scheduler"))
from harness import Control, expect, run_tests, wait_for  # noqa: E402

RT_RULE = {"name": "loadgen-rt", "match": {"exe": "sluice-loadgen", "cmdline": "* rt *"}, "class": "rt"}
BATCH_RULE = {"name": "batch", "match": {"label": "batch"}, "class": "be", "priority": -1, "kill": True}
POLICY = {"version": 1, "scheduler": {"be_budget_us": 200, "holdoff_ms": 50}, "defaults": {"class": "be"},
          "rules": [RT_RULE, BATCH_RULE]}
SPIN_PTX = """.version 8.0
.target sm_90
.address_size 64

.visible .entry sluice_spin_long(
\t.param .u64 sluice_spin_long_param_0
)
{
\tret;
}
"""
LAUNCHES = 80


def start_be_with_work_in_flight(h, tag):
    """sluiced with POLICY, and a preloaded BE client (kill on) with 80 launches of 10 waves of 2 ms
    (about 1.6 s of BE work queued at once) that sluiced sees in flight. Returns the client, its
    statistics file and a control connection."""
    os.environ["SLUICE_REAL_LIBCUDA"] = h.bin["fake"]  # sluiced's driver for kill words
    h.start_daemon(policy=POLICY)
    ptx = os.path.join(h.work, f"spin-{tag}.ptx")
    with open(ptx, "w") as f:
        f.write(SPIN_PTX)
    stats = os.path.join(h.work, f"be-{tag}.json")
    client = os.path.join(h.build, "tests", "integration", "shim", "shim_client")
    env = h.env(LD_PRELOAD=h.bin["shim"], SLUICE_CLASS="batch", SLUICE_KILL="1", SLUICE_KILL_MIN_US="0",
                SLUICE_STATS_FILE=stats, XDG_CACHE_HOME=os.path.join(h.work, f"cache-{tag}"))
    be = subprocess.Popen([client, "ptx", ptx, "sluice_spin_long", "2000000", str(LAUNCHES), str(132 * 10)],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    h.clients.append(be)
    control = Control(h.socket)
    wait_for(lambda: any(c.get("inflight_us") for c in control.request("ps")["clients"]), 20,
             "the BE client reported work in flight")
    return be, stats, control


def test_sluiced_kills_and_the_twins_resume(h):
    be, stats, control = start_be_with_work_in_flight(h, "resume")
    rt = h.client(["rt", "--kernel-us", "50", "--grid", "12", "--period-us", "2000", "--duration-s", "1"])
    _, err = be.communicate(timeout=120)
    expect(be.returncode == 0, f"BE client exit code {be.returncode}:\n{err[-3000:]}")
    rt.communicate(timeout=60)
    kills = control.request("status")["devices"][0].get("kills", 0)
    control.close()
    s = json.load(open(stats))["kill"]
    expect(s["kill_word_registered"] == 1, f"kill statistics: {s}")
    expect(s["twin_launches"] == LAUNCHES and s["twin_failures"] == 0, f"kill statistics: {s}")
    # Coverage: every BE launch was considered, and all of its predicted time went out as twins.
    expect(s["be_kernels"] == LAUNCHES and s["twin_kernel_ns"] == s["be_kernel_ns"], f"kill statistics: {s}")
    expect(kills >= 1, "sluiced never killed the BE client's work")
    expect(h.stop_daemon() == 0, "sluiced exit code")
    log = h.daemon_output()
    expect("kill words are written through" in log, f"sluiced never opened a kill word:\n{log[-3000:]}")
    expect("kill word cannot be used" not in log and "kill word not written" not in log,
           f"sluiced could not use the kill word:\n{log[-3000:]}")
    print(f"  BE twins {s}; sluiced kills on device 0: {kills}")


def test_a_word_left_raised_by_a_killed_sluiced_comes_down(h):
    """sluiced dies (SIGKILL) while RT keeps the BE client's kill word raised: the client lowers the
    word itself when it loses the daemon, so its paused twins finish in passthrough."""
    be, stats, control = start_be_with_work_in_flight(h, "lost")
    # RT every 2 ms for longer than the test: the gate stays shut, so a raised word stays raised.
    rt = h.client(["rt", "--kernel-us", "50", "--grid", "12", "--period-us", "2000", "--duration-s", "30"])
    wait_for(lambda: control.request("status")["devices"][0].get("kills", 0) >= 1, 20,
             "sluiced raised the BE client's kill word")
    control.close()
    expect(h.stop_daemon(signal.SIGKILL) == -signal.SIGKILL, "sluiced was not killed")
    try:
        _, err = be.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        be.kill()
        _, err = be.communicate()
        expect(False, f"the BE client stayed paused behind the kill word of a dead sluiced:\n{err[-3000:]}")
    expect(be.returncode == 0, f"BE client exit code {be.returncode}:\n{err[-3000:]}")
    expect("kill words lowered" in err, f"the BE client did not lower its kill word:\n{err[-3000:]}")
    rt.kill()
    rt.communicate(timeout=60)
    s = json.load(open(stats))["kill"]
    expect(s["twin_launches"] == LAUNCHES and s["twin_failures"] == 0, f"kill statistics: {s}")
    print(f"  BE finished after sluiced was killed with its word raised: {s['twin_launches']} twin launches")


TESTS = [test_sluiced_kills_and_the_twins_resume, test_a_word_left_raised_by_a_killed_sluiced_comes_down]

if __name__ == "__main__":
    sys.exit(run_tests(TESTS, sys.argv[1]) if len(sys.argv) == 2 else __doc__)
