#!/usr/bin/env python3
"""The client-side mechanisms end to end: sluice-loadgen clients under libsluice.so over the fake
driver, with sluiced deciding. In mps mode (a fake nvidia-cuda-mps-control) a BE client's kernels go
to an SM partition (a green context of the fake driver) while RT is active and back to the full GPU
after; in timeslice mode nothing is routed. An RT client's streams get the greatest priority. What
each client did comes from its statistics file (SLUICE_STATS_FILE).

  shim_mech_test.py BUILD_DIR
"""

import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "scheduler"))
from harness import Control, expect, run_tests  # noqa: E402

FAKE_MPS = os.path.join(HERE, "..", "scheduler", "fake_mps_control.py")
RT_RULE = {"name": "loadgen-rt", "match": {"exe": "sluice-loadgen", "cmdline": "* rt *"}, "class": "rt"}
POLICY = {"version": 1, "scheduler": {"be_budget_us": 200, "holdoff_ms": 50}, "defaults": {"class": "be"},
          "rules": [RT_RULE]}
BE_ARGS = ["be", "--kernel-us", "2000", "--grid", "132", "--depth", "4"]
RT_ARGS = ["rt", "--kernel-us", "50", "--grid", "12", "--period-us", "2000"]


def stats_path(h, name):
    return os.path.join(h.work, f"stats-{name}.json")


def run_pair(h, mode_args):
    """A BE client for 6 s with an RT client during its first 2 s; returns their statistics and the
    routes sluiced announced meanwhile."""
    h.write_policy(POLICY)
    h.start_daemon(args=("--gpu", "0", *mode_args))
    control = Control(h.socket)
    be = h.client(BE_ARGS + ["--duration-s", "6"], label="be",
                  extra_env={"SLUICE_STATS_FILE": stats_path(h, "be")})
    rt = h.client(RT_ARGS + ["--duration-s", "2"], extra_env={"SLUICE_STATS_FILE": stats_path(h, "rt")})
    routes = set()
    while be.poll() is None:
        devices = control.request("status").get("devices") or [{}]
        routes.add(devices[0].get("route"))
        time.sleep(0.02)
    for name, proc in (("be", be), ("rt", rt)):
        _, err = proc.communicate(timeout=60)
        expect(proc.returncode == 0, f"{name} client exit code {proc.returncode}:\n{err[-3000:]}")
    control.close()
    stats = {name: json.load(open(stats_path(h, name))) for name in ("be", "rt")}
    return stats, routes


def test_mps_mode_routes_best_effort_kernels_while_rt_is_active(h):
    stats, routes = run_pair(h, ("--mps", "--mps-control", FAKE_MPS))
    be, rt = stats["be"]["routing"], stats["rt"]["routing"]
    expect("partition" in routes, f"sluiced never routed BE to a partition: {routes}")
    expect(be["routed_launches"] > 0 and be["partitions"] == 1 and be["mirror_streams"] >= 1,
           f"BE routing counters: {be}")
    expect(be["route_switches"] >= 2, f"BE went to the partition and came back: {be}")
    expect(be["route_failures"] == 0, f"BE routing failures: {be}")
    expect(rt["routed_ops"] == 0 and rt["partitions"] == 0, f"RT is never routed: {rt}")
    expect(stats["rt"]["priority_overrides"] >= 1, f"RT's stream got the greatest priority: {stats['rt']}")
    expect(stats["be"]["priority_overrides"] == 0, f"BE's stream is already at the least priority: {stats['be']}")
    print(f"  BE routing {be}; RT priority overrides {stats['rt']['priority_overrides']}")


def test_timeslice_mode_never_routes(h):
    stats, routes = run_pair(h, ())
    expect(routes <= {"full", None}, f"routes announced in timeslice mode: {routes}")
    be = stats["be"]["routing"]
    expect(be["routed_ops"] == 0 and be["partitions"] == 0, f"BE routing counters: {be}")


TESTS = [test_mps_mode_routes_best_effort_kernels_while_rt_is_active, test_timeslice_mode_never_routes]

if __name__ == "__main__":
    sys.exit(run_tests(TESTS, sys.argv[1]) if len(sys.argv) == 2 else __doc__)
