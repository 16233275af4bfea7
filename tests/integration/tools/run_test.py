#!/usr/bin/env python3
"""`sluice run` over the fake driver: children of a shell script inherit the shim, the class and the
label (checked in sluiced's ps); an existing LD_PRELOAD is kept and the shim is not added twice;
the hint without a daemon; CMD's exit status and signals; errors naming the bad argument.

  run_test.py BUILD_DIR
"""

import json
import os
import shutil
import signal
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scheduler"))
from harness import expect, run_tests, sanitized, sanitizer_options, wait_for  # noqa: E402

POLICY = {"version": 1, "scheduler": {"be_budget_us": 200, "holdoff_ms": 50},
          "defaults": {"class": "be"},
          "rules": [{"name": "nightly", "match": {"label": "nightly"}, "class": "be", "priority": -3},
                    {"name": "loadgen-rt", "match": {"exe": "sluice-loadgen", "cmdline": "* rt *"}, "class": "rt"}]}

SPAWN_TWO = """#!/bin/sh
# Two GPU clients in the background, as a launcher (torchrun, a job script) would start them.
"$LOADGEN" "$@" &
"$LOADGEN" "$@" &
wait
"""


def sluice_bin(h):
    return os.path.join(h.build, "tools", "sluice", "sluice")


def run_env(h, **extra):
    """The harness's environment; in an ASan build the programs run with the shim preloaded do not
    report their own leaks (as the harness's clients)."""
    return h.env(ASAN_OPTIONS="detect_leaks=0:" + sanitizer_options(os.environ), **extra)


def sluice(h, *args, env=None, **kwargs):
    return subprocess.run([sluice_bin(h), *args], env=env or run_env(h), capture_output=True, text=True, timeout=60,
                          **kwargs)


def start_group(h, *args, extra=None):
    """`sluice run ARGS` in a process group of its own (killed as a whole by stop_group)."""
    env = run_env(h, SLUICE_REAL_LIBCUDA=h.bin["fake"], LOADGEN=h.bin["loadgen"], **(extra or {}))
    return subprocess.Popen([sluice_bin(h), "run", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def stop_group(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def parent_of(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def test_script_children_inherit_class_and_label(h):
    h.start_daemon(POLICY)
    script = os.path.join(h.work, "spawn_two.sh")
    with open(script, "w") as f:
        f.write(SPAWN_TWO)
    os.chmod(script, 0o755)
    load = ["be", "--kernel-us", "500", "--depth", "2", "--duration-s", "30"]
    labelled = start_group(h, "--label", "nightly", "--", script, *load)
    capped = start_group(h, "--class", "be", "--", h.bin["loadgen"], "rt", "--kernel-us", "50", "--period-us",
                         "2000", "--duration-s", "30")
    try:
        clients = wait_for(lambda: (lambda c: c if len(c) == 3 else None)(h.clients_by_pid()), 20,
                           "three clients (two script children and one capped) connected")
        children = [c for pid, c in clients.items() if pid != capped.pid]
        expect(len(children) == 2 and all(parent_of(c["pid"]) == labelled.pid for c in children),
               f"the script's two children: {children}")
        for c in children:
            expect(c["label"] == "nightly" and c["class"] == "be" and c["rule"] == "nightly" and c["priority"] == -3,
                   f"child of the labelled script: {c}")
        rt = clients[capped.pid]  # exec: the pid sluice run had is the program's
        expect(rt["label"] == "be" and rt["class"] == "be" and rt["rule"].startswith("loadgen-rt"),
               f"--class be caps the RT rule: {rt}")
    finally:
        stop_group(labelled)
        stop_group(capped)


def test_environment_of_the_command(h):
    shim = os.path.realpath(h.bin["shim"])
    if sanitized(shim):
        print("    skipped: sh and python cannot run with a sanitized shim preloaded; "
              "this runs in the unsanitized build")
        return
    show = ["--", "sh", "-c", 'printf "%s|%s|%s" "$LD_PRELOAD" "$SLUICE_CLASS" "$SLUICE_SOCKET"']
    kept = sluice(h, "run", "--label", "x.1", *show, env=run_env(h, LD_PRELOAD="libm.so.6"))
    expect(kept.returncode == 0 and kept.stdout == f"{shim}:libm.so.6|x.1|{h.socket}",
           f"existing LD_PRELOAD: {kept.stdout!r} {kept.stderr!r}")
    nested = sluice(h, "run", "--", sluice_bin(h), "run", "--class", "be:2", *show,
                    env=run_env(h, LD_PRELOAD=f"libm.so.6 {shim}"))
    expect(nested.stdout == f"libm.so.6 {shim}|be:2|{h.socket}", f"the shim added twice: {nested.stdout!r}")
    other = sluice(h, "run", "--socket", "/nonexistent/s.sock", *show)
    expect(other.stdout == f"{shim}||/nonexistent/s.sock", f"--socket: {other.stdout!r}")
    python = sluice(h, "run", "--label", "py", "--", sys.executable, "-c",
                    "import os; print(os.environ['LD_PRELOAD'], os.environ['SLUICE_CLASS'])")
    expect(python.returncode == 0 and python.stdout.split() == [shim, "py"], f"python: {python.stdout!r} {python.stderr!r}")
    hint = sluice(h, "run", "--policy-hint", "--class", "be", "--", "true", "a*b")
    rule = json.loads(hint.stderr.split("policy rule for this command: ", 1)[1].splitlines()[0])
    expect(hint.returncode == 0 and rule["match"] == {"exe": os.path.basename(os.path.realpath(shutil.which("true"))),
                                                      "cmdline": "true a\\*b"} and rule["class"] == "be",
           f"--policy-hint: {hint.stderr!r}")


def test_hint_only_without_daemon(h):
    alone = sluice(h, "run", "--", "true")
    expect(alone.returncode == 0 and f"no sluiced answers at {h.socket}" in alone.stderr,
           f"no daemon: {alone.returncode} {alone.stderr!r}")
    h.start_daemon(POLICY)
    served = sluice(h, "run", "--", "true")
    expect(served.returncode == 0 and served.stderr == "", f"with a daemon: {served.stderr!r}")


def test_exit_status_and_errors(h):
    expect(sluice(h, "run", "--", "sh", "-c", "exit 7").returncode == 7, "exit status not propagated")
    expect(sluice(h, "run", "--", "sh", "-c", "kill -TERM $$").returncode == -signal.SIGTERM,
           "a signal's death not propagated")
    missing = sluice(h, "run", "--", "no-such-command-xyz")
    expect(missing.returncode == 127 and "no-such-command-xyz: command not found" in missing.stderr,
           f"missing: {missing.returncode} {missing.stderr!r}")
    plain = os.path.join(h.work, "not-executable")
    open(plain, "w").close()
    denied = sluice(h, "run", "--", plain)
    expect(denied.returncode == 126 and plain in denied.stderr, f"not executable: {denied.returncode} {denied.stderr!r}")
    for args, named in ((["run", "--class", "gold", "--", "true"], "--class 'gold'"),
                        (["run", "--label", "a b", "--", "true"], "--label 'a b'"),
                        (["run", "--class", "be", "--label", "x", "--", "true"], "--class be and --label x"),
                        (["run"], "no command given"),
                        (["run", "--bogus", "--", "true"], "--bogus"),
                        (["walk"], "unknown command 'walk'")):
        bad = sluice(h, *args)
        expect(bad.returncode == 2 and named in bad.stderr, f"sluice {args}: {bad.returncode} {bad.stderr!r}")
    no_shim = sluice(h, "run", "--", "true", env=run_env(h, SLUICE_SHIM="/nonexistent/libsluice.so"))
    expect(no_shim.returncode == 2 and "SLUICE_SHIM=/nonexistent/libsluice.so" in no_shim.stderr,
           f"SLUICE_SHIM: {no_shim.stderr!r}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(run_tests([test_script_children_inherit_class_and_label, test_environment_of_the_command,
                        test_hint_only_without_daemon, test_exit_status_and_errors], sys.argv[1]))
