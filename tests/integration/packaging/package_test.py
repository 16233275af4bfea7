"""The Debian package: built with cpack from a build tree, its contents and control fields, and the
installed programs run from a root that `dpkg -x` unpacked (docs/operations.md, "Installing").

usage: package_test.py BUILD_DIR
Exits 77 (skipped) where cpack, dpkg-deb or dpkg are missing.
"""

import glob
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scheduler"))
from harness import sanitized  # noqa: E402

SKIP = 77

EXPECTED_PATHS = [
    "./usr/bin/sluiced",
    "./usr/bin/sluicectl",
    "./usr/bin/sluice",
    "./usr/bin/sluice-ptx",
    "./usr/lib/sluice/libsluice.so",
    "./usr/lib/systemd/system/sluiced.service",
    "./etc/sluice/policy.json",
    "./usr/share/doc/sluice/README.md",
    "./usr/share/doc/sluice/operations.md",
    "./usr/share/doc/sluice/policy.md",
    "./usr/share/doc/sluice/examples/policy.json",
]
EXPECTED_FIELDS = ["Package: sluice", "Maintainer: ", "Architecture: ", "Version: ", "Depends: ",
                   "Description: "]

failures = []


def check(condition, what):
    if not condition:
        failures.append(what)
        print(f"FAIL: {what}")


def run(cmd, **kwargs):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kwargs)


def main():
    build = os.path.abspath(sys.argv[1])
    for tool in ("cpack", "dpkg-deb", "dpkg"):
        if shutil.which(tool) is None:
            print(f"skipped: {tool} is not installed")
            return SKIP
    work = tempfile.mkdtemp(prefix="sluice-deb-")
    try:
        # gzip: the test's package need not be small, only quick to build.
        built = run(["cpack", "--config", os.path.join(build, "CPackConfig.cmake"), "-B", work,
                     "-D", "CPACK_DEBIAN_COMPRESSION_TYPE=gzip"], cwd=build)
        debs = glob.glob(os.path.join(work, "*.deb"))
        if built.returncode != 0 or len(debs) != 1:
            print(built.stdout + built.stderr)
            print("FAIL: cpack did not make one .deb (build every installed target first: cmake --build)")
            return 1
        deb = debs[0]
        print(f"{os.path.basename(deb)}: {os.path.getsize(deb)} bytes")

        listing = run(["dpkg-deb", "-c", deb]).stdout
        paths = {line.split()[-1] for line in listing.splitlines() if line.strip()}
        for path in EXPECTED_PATHS:
            check(path in paths, f"dpkg-deb -c lists {path}")
        check(not any("/include/" in p or p.endswith(".a") for p in paths), "no headers or static libraries")
        check(not any(p.startswith("./usr/lib/") and p.endswith("libcuda.so.1") for p in paths),
              "nothing named libcuda.so.1 on the loader's path")

        info = run(["dpkg-deb", "-I", deb]).stdout
        for field in EXPECTED_FIELDS:
            check(f"\n {field}" in "\n" + info, f"dpkg-deb -I has '{field.strip()}'")
        conffiles = run(["dpkg-deb", "--ctrl-tarfile", deb])
        check(conffiles.returncode == 0, "control archive readable")
        control_dir = os.path.join(work, "control")
        run(["dpkg-deb", "-e", deb, control_dir])
        with open(os.path.join(control_dir, "conffiles")) as f:
            check("/etc/sluice/policy.json" in f.read().split(), "conffiles has /etc/sluice/policy.json")
        for script in ("postinst", "prerm", "postrm"):
            path = os.path.join(control_dir, script)
            check(os.access(path, os.X_OK), f"{script} present and executable")
            with open(path) as f:
                code = [line for line in f.read().splitlines() if not line.lstrip().startswith("#")]
            check(not any(word in line for line in code for word in ("enable", "start", "restart")),
                  f"{script} enables or starts nothing")

        root = os.path.join(work, "root")
        check(run(["dpkg", "-x", deb, root]).returncode == 0, "dpkg -x unpacks")
        bindir = os.path.join(root, "usr", "bin")
        env = dict(os.environ)
        for name in ("LD_PRELOAD", "SLUICE_SHIM"):
            env.pop(name, None)
        env["SLUICE_SOCKET"] = os.path.join(work, "no-daemon.sock")
        for program in ("sluicectl", "sluiced", "sluice", "sluice-ptx"):
            result = run([os.path.join(bindir, program), "--help"], env=env)
            check(result.returncode == 0 and "usage" in (result.stdout + result.stderr).lower(),
                  f"installed {program} --help (status {result.returncode}): {result.stderr.strip()[:200]}")
        policy = os.path.join(root, "etc", "sluice", "policy.json")
        result = run([os.path.join(bindir, "sluicectl"), "policy", "validate", policy], env=env)
        check(result.returncode == 0, f"sluicectl policy validate {policy}: {result.stdout}{result.stderr}")
        # The installed `sluice run` finds the installed shim at ../lib/sluice/ by itself (sh cannot
        # run with a sanitized shim preloaded: checked in the unsanitized build).
        shim = os.path.join(root, "usr", "lib", "sluice", "libsluice.so")
        if not sanitized(shim):
            result = run([os.path.join(bindir, "sluice"), "run", "--", "sh", "-c", 'printf %s "$LD_PRELOAD"'], env=env)
            check(result.returncode == 0 and os.path.realpath(result.stdout.split(":")[0]) == os.path.realpath(shim),
                  f"installed sluice run preloads {shim}: got '{result.stdout}' {result.stderr.strip()}")
        with open(os.path.join(root, "usr", "lib", "systemd", "system", "sluiced.service")) as f:
            unit = f.read()
        check("ExecStart=/usr/bin/sluiced " in unit, "the unit starts /usr/bin/sluiced")
        check("file:///usr/share/doc/sluice/operations.md" in unit, "the unit documents /usr/share/doc/sluice")
        readelf = run(["readelf", "-d", shim])
        check("libcuda.so.1" in readelf.stdout, "the installed shim's SONAME is libcuda.so.1")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    print("package checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
