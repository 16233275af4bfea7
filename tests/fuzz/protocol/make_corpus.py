#!/usr/bin/env python3
"""Writes the seed corpus of protocol_decoder_fuzzer: valid messages of every type (in the layout of
protocol/include/sluice/protocol/layout.h), a few broken ones, and socket frames.

  make_corpus.py OUT_DIR
"""

import os
import struct
import sys

OP, SUBMITTED, NAME, STATUS, SAMPLE, GOODBYE = 1, 2, 3, 4, 5, 6
KERNEL, COPY = 0, 1
HELD, DONE = 0, 1


def op(seq, state=HELD, kind=KERNEL, grid=(132, 1, 1), block=(256, 1, 1), nbytes=0, kernel=0xabc, device=0):
    if kind != KERNEL:
        grid, block, kernel = (0, 0, 0), (0, 0, 0), 0
    return struct.pack("<HBBhHQQQ3I3IQQQQI36x", OP, kind, state, device, 0, seq, 0x10, kernel, *grid, *block,
                       nbytes, 1000 + seq, 2000 + seq if state == DONE else 0, 150_000, 0)


def submitted(seq):
    return struct.pack("<HhIQQ104x", SUBMITTED, 0, 0, seq, 3000 + seq)


def name(text, kernel=0xabc, offset=0):
    chunk = text[offset:offset + 96].encode()
    return struct.pack("<HHHBBQQ96sQ", NAME, offset, len(text), len(chunk), 0, kernel, 0x1234, chunk, 0)


def status(busy, inflight, retired, applied, held=0):
    return struct.pack("<HhB3xQQQQQQQ64x", STATUS, 0, 1 if busy else 0, applied, inflight, held, retired,
                       inflight * 3, inflight * 4, 5000)


def sample(duration, work=132, kernel=0xabc):
    return struct.pack("<HBBhHQQQQ88x", SAMPLE, KERNEL, 0, 0, 0, kernel, work, duration, 7)


def goodbye():
    return struct.pack("<H126x", GOODBYE)


def records(*pairs):
    return b"".join(bytes([control]) + slot for control, slot in pairs)


def frame(payload):
    return struct.pack("<I", len(payload)) + payload


seeds = {
    "rt_launch_then_idle": records((0, op(1, DONE)), (4, status(True, 0, 0, 1)), (40, status(False, 0, 1, 1))),
    "be_held_then_submitted": records((1, status(False, 0, 0, 3, held=1)), (1, op(5, HELD)), (5, submitted(5)),
                                      (1, status(False, 150_000, 0, 4))),
    "rt_active_be_waiting": records((0, op(1, DONE)), (1, op(2, HELD)), (2, op(3, HELD, kernel=0xdef)),
                                    (5, status(False, 0, 0, 9, held=1)), (6, status(False, 0, 0, 9, held=1)),
                                    (0xfe, status(False, 0, 1, 1))),
    "names_and_samples": records((1, name("sluice_spin_kernel_with_a_long_templated_name<float, 128>" * 3)),
                                 (1, name("sluice_spin_kernel_with_a_long_templated_name<float, 128>" * 3, offset=96)),
                                 (2, sample(2_000_000)), (2, sample(1_000, work=1 << 20))),
    "copies": records((1, op(9, HELD, kind=COPY, nbytes=64 << 20)), (1, op(10, DONE, kind=COPY, nbytes=8 << 20))),
    "broken": records((0, op(0)), (1, op(3, grid=(0, 1, 1))), (2, b"\x63" + b"\x00" * 127),
                      (3, name("x", kernel=0)), (0xff, goodbye())),
    "frames": frame(b'{"cmd": "status"}') + frame(b"\x00" * 112) + struct.pack("<I", 1 << 30),
}

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
for seed_name, data in seeds.items():
    with open(os.path.join(out, seed_name), "wb") as f:
        f.write(data)
print(f"wrote {len(seeds)} seeds to {out}")
