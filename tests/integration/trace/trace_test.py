"""sluice-trace against the fake driver (a libcuda.so.1 file: uprobes work on any ELF).

1. A program that loads the fake driver directly makes N launches and M copies: sluice-trace
   counts exactly N and M for its pid.
2. sluiced --trace: a client through the shim and a direct program run side by side; the
   status reply lists the direct one as unmanaged and not the client (which the tracer did see),
   and `sluicectl ps --all` shows both, the direct one marked.
3. Errors that need no privileges: a missing driver library, a library without the symbols.

Needs root (or CAP_BPF + CAP_PERFMON) and a kernel with uprobes; otherwise exits 77 with the
reason. Standard library only."""

import argparse
import json
import os
import select
import subprocess
import sys
import tempfile
import time

SKIP = 77
LAUNCHES, COPIES = 37, 11


def fail(message):
    print(f"FAIL: {message}")
    sys.exit(1)


def expect(condition, message):
    if not condition:
        fail(message)


class JsonLines:
    """A sluice-trace --json process; lines are read as they come."""

    def __init__(self, argv, env):
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.last = None

    def next_line(self, timeout):
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.proc.stdout.readline()
        if not line:
            return None
        self.last = json.loads(line)
        return self.last

    def wait_for(self, predicate, timeout, what):
        deadline = time.time() + timeout
        while time.time() < deadline:
            line = self.next_line(max(0.0, deadline - time.time()))
            if line is None and self.proc.poll() is not None:
                fail(f"sluice-trace exited ({self.proc.returncode}): {self.proc.stderr.read()}")
            if line is not None and predicate(line):
                return line
        fail(f"timed out after {timeout} s: {what}; last line: {self.last}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.stdout.close()  # a tracer blocked on a full pipe must not wait for this reader
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                fail("sluice-trace did not stop on SIGTERM")


def process(line, pid):
    for p in line["processes"]:
        if p["pid"] == pid:
            return p
    return None


def base_env(work):
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    env["SLUICE_FAKE_GPU_DIR"] = os.path.join(work, "gpu")
    os.makedirs(env["SLUICE_FAKE_GPU_DIR"], exist_ok=True)
    return env


def start_client(args, env, driver, launches, copies, wait=False):
    argv = [args.client, "--driver", driver, "--launches", str(launches), "--copies", str(copies)]
    if wait:
        argv.append("--wait")
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    line = proc.stdout.readline()
    expect(line.startswith("done "), f"client did not finish its work: {line!r} {proc.stderr.read() if not wait else ''}")
    return proc


def check_errors(args):
    result = subprocess.run([args.trace, "--driver", "/nonexistent/libcuda.so.1", "--once"], capture_output=True,
                            text=True, timeout=30)
    expect(result.returncode == 2 and "/nonexistent/libcuda.so.1: cannot open" in result.stderr,
           f"missing driver: {result.returncode} {result.stderr!r}")
    result = subprocess.run([args.trace, "--driver", "/bin/sh", "--once"], capture_output=True, text=True, timeout=30)
    expect(result.returncode == 2 and os.path.realpath("/bin/sh") in result.stderr, f"not a driver: {result.returncode} {result.stderr!r}")
    result = subprocess.run([args.trace, "--driver", args.fake, "--list-symbols"], capture_output=True, text=True,
                            timeout=30)
    expect(result.returncode == 0 and " launch cuLaunchKernel\n" in result.stdout, f"--list-symbols: {result.stdout!r}")
    result = subprocess.run([args.trace, "--duration", "2h", "--once"], capture_output=True, text=True, timeout=30)
    expect(result.returncode == 2 and "--duration '2h'" in result.stderr, f"bad duration: {result.stderr!r}")
    print("[ ok ] errors name their cause")


def check_direct_counts(args, work):
    env = base_env(work)
    tracer = JsonLines([args.trace, "--driver", args.fake, "--json", "--interval", "100ms"], env)
    first = tracer.next_line(30)
    if first is None:
        tracer.proc.wait(timeout=30)
        reason = tracer.proc.stderr.read().strip()
        if tracer.proc.returncode in (3, 4):
            print(f"SKIP: sluice-trace cannot trace here: {reason}")
            sys.exit(SKIP)
        fail(f"sluice-trace exited ({tracer.proc.returncode}): {reason}")
    expect(first["probes"] > 0, f"no probes: {first}")
    client = start_client(args, env, args.fake, LAUNCHES, COPIES)
    client.wait(timeout=30)
    expect(client.returncode == 0, f"direct client failed: {client.stderr.read()}")
    # Counts only grow, and reports made before the client finished can still be in the pipe: wait
    # for one that has all its calls, then they must be exact (no call counted twice).
    def complete(line):
        counts = process(line, client.pid)
        return counts is not None and counts["launches"] >= LAUNCHES and counts["copies"] >= COPIES

    counts = process(tracer.wait_for(complete, 30, "the direct client's counts"), client.pid)
    expect(counts["launches"] == LAUNCHES and counts["copies"] == COPIES,
           f"expected {LAUNCHES} launches and {COPIES} copies for pid {client.pid}, got {counts}")
    expect(counts["comm"] == "trace_client", f"comm: {counts}")
    print(f"[ ok ] direct client: {counts['launches']} launches, {counts['copies']} copies (pid {client.pid})")

    table = subprocess.run([args.trace, "--driver", args.fake, "--once", "--duration", "200ms"], capture_output=True,
                           text=True, timeout=60)
    expect(table.returncode == 0 and ("LAUNCHES" in table.stdout or "no process" in table.stdout),
           f"--once table: {table.returncode} {table.stdout!r} {table.stderr!r}")
    print("[ ok ] --once prints a table")
    return tracer


def ctl_json(args, socket, *command):
    result = subprocess.run([args.sluicectl, "--socket", socket, *command, "--json"], capture_output=True, text=True,
                            timeout=30)
    return json.loads(result.stdout) if result.returncode == 0 else None


def wait_until(condition, timeout, what, last_seen=lambda: None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    fail(f"timed out after {timeout} s: {what}; last seen: {last_seen()}")


def check_daemon(args, work, tracer):
    env = base_env(work)
    socket = os.path.join(work, "sluiced.sock")
    env["SLUICE_SOCKET"] = socket
    env["SLUICE_TRACE_PROGRAM"] = args.trace
    log_path = os.path.join(work, "sluiced.log")
    daemon = subprocess.Popen([args.sluiced, "--socket", socket, "--gpu", "0", f"--trace={args.fake}"], env=env,
                              stderr=open(log_path, "w"))
    clients = []
    try:
        # "running" comes with the tracer's first report, made once every probe is attached.
        wait_until(lambda: ((ctl_json(args, socket, "status") or {}).get("unmanaged") or {}).get("state") == "running",
                   30, "sluiced's tracer running")
        direct = start_client(args, env, args.fake, 5, 3, wait=True)
        # In an ASan build the shim comes ahead of the ASan runtime (harmless for sluice's own
        # programs); leak reports of the client are not the tracer's to check.
        shim_env = dict(env, LD_PRELOAD=args.shim, SLUICE_REAL_LIBCUDA=args.fake,
                        ASAN_OPTIONS="verify_asan_link_order=0:detect_leaks=0:" + env.get("ASAN_OPTIONS", ""))
        managed = start_client(args, shim_env, "libcuda.so.1", 7, 2, wait=True)
        clients = [direct, managed]

        last = {}

        def listed():
            # The tracer reports every second: wait for the report made after the program's last call.
            status = ctl_json(args, socket, "status")
            last["unmanaged"] = (status or {}).get("unmanaged") or {}
            counts = process(last["unmanaged"], direct.pid) if "processes" in last["unmanaged"] else None
            done = counts is not None and counts["launches"] >= 5 and counts["copies"] >= 3
            return last["unmanaged"] if done else None

        unmanaged = wait_until(listed, 30, "the direct program listed as unmanaged with all its calls",
                               lambda: last.get("unmanaged"))
        ps = ctl_json(args, socket, "ps")
        expect(any(c["pid"] == managed.pid for c in ps["clients"]), f"the shim client is not a client: {ps}")
        expect(all(p["pid"] != managed.pid for p in unmanaged["processes"]), f"the client is listed: {unmanaged}")
        expect(unmanaged["state"] == "running", f"tracer state: {unmanaged}")
        mine = process(unmanaged, direct.pid)
        expect(mine["launches"] == 5 and mine["copies"] == 3, f"direct counts in status: {mine}")
        expect(unmanaged["launches_total"] >= 5, f"launches_total: {unmanaged}")
        # The tracer did see the client's calls reach the real (fake) driver through the shim.
        tracer.wait_for(lambda line: (process(line, managed.pid) or {}).get("launches", 0) >= 7, 30,
                        "the shim client's launches seen by the tracer")

        text = subprocess.run([args.sluicectl, "--socket", socket, "ps", "--all"], capture_output=True, text=True,
                              timeout=30)
        expect(text.returncode == 0, f"ps --all: {text.stderr}")
        rows = {int(line.split()[0]): line for line in text.stdout.splitlines() if line.split() and line.split()[0].isdigit()}
        expect(direct.pid in rows and "unmanaged" in rows[direct.pid], f"ps --all, direct row: {text.stdout}")
        expect(managed.pid in rows and "unmanaged" not in rows[managed.pid], f"ps --all, client row: {text.stdout}")
        print(f"[ ok ] sluiced --trace: pid {direct.pid} unmanaged, client pid {managed.pid} not")
    except SystemExit:
        print("---- sluiced log ----\n" + open(log_path).read()[-4000:])
        raise
    finally:
        for proc in clients:
            proc.stdin.close()
            proc.wait(timeout=30)
        daemon.terminate()
        code = daemon.wait(timeout=30)
    expect(code == 0, f"sluiced exited with {code}: {open(log_path).read()[-3000:]}")

    # A tracer that cannot run: sluiced says why and goes on.
    env["SLUICE_TRACE_PROGRAM"] = "/nonexistent/sluice-trace"
    daemon = subprocess.Popen([args.sluiced, "--socket", socket, "--gpu", "0", "--trace"], env=env,
                              stderr=open(log_path, "w"))
    try:
        status = wait_until(lambda: ctl_json(args, socket, "status"), 20, "sluiced answers without its tracer")
        expect(status["unmanaged"]["state"] == "failed" and "/nonexistent/sluice-trace" in status["unmanaged"]["error"],
               f"failed tracer: {status['unmanaged']}")
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
    expect("/nonexistent/sluice-trace" in open(log_path).read(), "sluiced did not log why the tracer is missing")
    print("[ ok ] sluiced runs on without its tracer")


def main():
    parser = argparse.ArgumentParser()
    for name in ("trace", "client", "fake", "shim", "sluiced", "sluicectl"):
        parser.add_argument(f"--{name}", required=True)
    args = parser.parse_args()
    check_errors(args)
    if os.geteuid() != 0:
        print("SKIP: sluice-trace needs root (or CAP_BPF and CAP_PERFMON); the errors were checked")
        return SKIP
    with tempfile.TemporaryDirectory(prefix="sluice-trace-") as work:
        tracer = check_direct_counts(args, work)
        try:
            check_daemon(args, work, tracer)
        finally:
            tracer.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
