"""Lint of packaging/systemd/sluiced.service.in with `systemd-analyze verify`.

The unit is filled in as `cmake --install` would, except that ExecStart names the sluiced of the
build tree, so that the check can see an executable there. Any message from systemd-analyze fails
the test (it reports unknown keys as warnings with status 0). Exits 77 (skipped) where
systemd-analyze is missing or cannot verify even a trivial unit here (some containers).

usage: unit_verify.py UNIT_TEMPLATE SLUICED
"""

import os
import shutil
import subprocess
import sys
import tempfile

SKIP = 77


def verify(path):
    result = subprocess.run(["systemd-analyze", "verify", path], capture_output=True, text=True, timeout=120)
    return result.returncode, (result.stdout + result.stderr).strip()


def main():
    template, sluiced = sys.argv[1], os.path.abspath(sys.argv[2])
    if shutil.which("systemd-analyze") is None:
        print("skipped: systemd-analyze is not installed (apt-get install systemd)")
        return SKIP
    work = tempfile.mkdtemp(prefix="sluice-unit-")
    try:
        control = os.path.join(work, "sluice-control.service")
        with open(control, "w") as f:
            f.write("[Unit]\nDescription=control\n[Service]\nExecStart=/bin/true\n")
        code, output = verify(control)
        if code != 0 or output:
            print(f"skipped: systemd-analyze cannot verify a trivial unit here (status {code}):\n{output}")
            return SKIP

        with open(template) as f:
            text = f.read()
        text = text.replace("@SLUICE_BINDIR@", os.path.dirname(sluiced))
        text = text.replace("@SLUICE_DOCDIR@", "/usr/share/doc/sluice")
        if "@" in "".join(line for line in text.splitlines() if not line.startswith("#")):
            print(f"{template}: a placeholder is left unfilled")
            return 1
        unit = os.path.join(work, "sluiced.service")
        with open(unit, "w") as f:
            f.write(text)
        code, output = verify(unit)
        if code != 0 or output:
            print(f"{template}: systemd-analyze verify (status {code}):\n{output}")
            return 1
        print(f"{template}: systemd-analyze verify: no findings")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
