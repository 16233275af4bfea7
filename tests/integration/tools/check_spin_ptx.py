#!/usr/bin/env python3
"""sluice-loadgen's embedded PTX assembles with ptxas for the oldest and the newest targets it must
run on (a real GPU JITs it), and keeps the entry the fake driver recognises.

  check_spin_ptx.py PTXAS tools/loadgen/spin_ptx.h
"""

import re
import subprocess
import sys
import tempfile

ptxas, header = sys.argv[1], sys.argv[2]
text = open(header).read()
match = re.search(r'kSpinPtx = R"\((.*?)\)";', text, re.S)
if not match:
    sys.exit(f"{header}: no kSpinPtx raw string")
ptx = match.group(1)
if not re.search(r"\.visible \.entry sluice_spin\(\s*\.param \.u64 \w+\s*\)", ptx):
    sys.exit("the PTX lost its entry sluice_spin(u64): the fake driver runs entries named sluice_spin* as spin")
with tempfile.NamedTemporaryFile("w", suffix=".ptx") as f:
    f.write(ptx)
    f.flush()
    for arch in ("sm_75", "sm_90"):
        result = subprocess.run([ptxas, f"-arch={arch}", f.name, "-o", "/dev/null"], capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"ptxas -arch={arch} failed:\n{result.stderr}")
        print(f"ptxas -arch={arch}: ok")
