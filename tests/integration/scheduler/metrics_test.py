#!/usr/bin/env python3
"""sluiced --metrics over the fake driver: the families of a scrape, counters that move while an RT
and a BE client run, protocol errors by reason, 404 for other paths, and refused addresses.

  metrics_test.py BUILD_DIR
"""

import os
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import expect, frame, run_tests, wait_for  # noqa: E402

POLICY = {"version": 1, "scheduler": {"be_budget_us": 200, "holdoff_ms": 50},
          "defaults": {"class": "be"},
          "rules": [{"name": "loadgen-rt", "match": {"exe": "sluice-loadgen", "cmdline": "* rt *"}, "class": "rt"}]}

FAMILIES = {
    "sluice_clients": "gauge", "sluice_queue_depth": "gauge", "sluice_launches_submitted_total": "counter",
    "sluice_launches_held_total": "counter", "sluice_launches_released_total": "counter",
    "sluice_gate_wait_seconds": "histogram", "sluice_rt_deadline_misses_total": "counter",
    "sluice_kills_total": "counter", "sluice_route_switches_total": "counter",
    "sluice_protocol_errors_total": "counter", "sluice_unmanaged_launches_total": "counter",
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port, path="/metrics"):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
        return reply.headers["Content-Type"], reply.read().decode()


def samples(text):
    """{'name{labels}': value} of every sample line."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def test_scrape_families_and_moving_counters(h):
    port = free_port()
    h.start_daemon(POLICY, args=("--gpu", "0", "--metrics", str(port)))
    content_type, text = scrape(port)
    expect(content_type == "text/plain; version=0.0.4; charset=utf-8", f"Content-Type: {content_type}")
    for name, kind in FAMILIES.items():
        expect(f"# TYPE {name} {kind}\n" in text and f"# HELP {name} " in text, f"family {name} missing:\n{text}")
    before = samples(text)
    expect(before['sluice_clients{class="rt"}'] == 0 and before["sluice_unmanaged_launches_total"] == 0,
           f"idle daemon: {before}")

    rt = h.client(["rt", "--kernel-us", "50", "--period-us", "2000", "--duration-s", "30"])
    be = h.client(["be", "--kernel-us", "3000", "--grid", "132", "--depth", "4", "--duration-s", "30"])
    wait_for(lambda: len(h.clients_by_pid()) == 2, 10, "both clients connected")
    released = 'sluice_launches_released_total{class="be"}'
    after = wait_for(lambda: (lambda s: s if s[released] > 0 else None)(samples(scrape(port)[1])), 20,
                     "held BE work released")
    expect(after['sluice_clients{class="rt"}'] == 1 and after['sluice_clients{class="be"}'] == 1, f"clients: {after}")
    expect(after['sluice_launches_submitted_total{class="rt"}'] > 0, "RT launches not counted")
    expect(after['sluice_launches_held_total{class="be"}'] >= after[released], "released more than held")
    for cls in ("rt", "be"):
        buckets = [v for k, v in after.items() if k.startswith(f'sluice_gate_wait_seconds_bucket{{class="{cls}"')]
        expect(buckets == sorted(buckets) and buckets[-1] == after[f'sluice_gate_wait_seconds_count{{class="{cls}"}}']
               and buckets[-1] > 0, f"{cls} gate wait buckets: {buckets}")
    # The gate holds BE work while RT is active: BE waits; RT never waits on the gate.
    expect(after['sluice_gate_wait_seconds_sum{class="be"}'] > 0, "no BE gate wait observed")
    expect(after["sluice_uptime_seconds"] > before["sluice_uptime_seconds"], "uptime did not move")
    rt.kill(), be.kill()


def test_protocol_errors_and_other_paths(h):
    port = free_port()
    h.start_daemon(POLICY, args=("--gpu", "0", "--metrics", f"127.0.0.1:{port}"))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(h.socket)
        s.sendall(frame(b"\0" * 112))  # a Hello without sluice's magic
        s.settimeout(5)
        s.recv(1)  # sluiced closes the connection
    errors = wait_for(lambda: samples(scrape(port)[1]).get('sluice_protocol_errors_total{reason="bad_magic"}'), 10,
                      "the bad hello counted")
    expect(errors == 1, f"bad_magic: {errors}")
    try:
        scrape(port, "/")
        raise AssertionError("/ answered 200")
    except urllib.error.HTTPError as error:
        expect(error.code == 404, f"/: {error.code}")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"NONSENSE\r\n\r\n")
        reply = s.recv(4096).decode()
    expect(reply.startswith("HTTP/1.1 400 "), f"garbage request: {reply!r}")


def test_refused_addresses(h):
    for args, named in ((["--metrics", "0.0.0.0:9400"], "--metrics-any-address"),
                        (["--metrics", "abc"], "--metrics 'abc'"),
                        (["--metrics", "example.org:80"], "'example.org' is not an IPv4 address")):
        result = subprocess.run([h.bin["sluiced"], "--socket", h.socket, *args], env=h.env(), capture_output=True,
                                text=True, timeout=30)
        expect(result.returncode != 0 and named in result.stderr, f"sluiced {args}: {result.returncode} {result.stderr}")
        expect(not os.path.exists(h.socket), "a refused --metrics left the socket behind")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(run_tests([test_scrape_families_and_moving_counters, test_protocol_errors_and_other_paths,
                        test_refused_addresses], sys.argv[1]))
