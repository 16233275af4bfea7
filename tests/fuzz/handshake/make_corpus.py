#!/usr/bin/env python3
"""Writes the seed corpus of handshake_fuzzer: a welcome, a control byte and a segment file, for an
accepted small segment and for the ways a handshake goes wrong. Layout: protocol/layout.h."""

import os
import struct

MAGIC, MAJOR, MINOR = 0x45434C53, 1, 2
HEADER, SLOT, RING_CONTROL = 4096, 128, 192


def welcome(status=0, segment_bytes=0, epoch=7, client=3, magic=MAGIC, reason=b""):
    return struct.pack("<IHHiIQQB7x160s", magic, MAJOR, MINOR, status, client, epoch, segment_bytes, 1, reason)


def segment(to_daemon=8, to_client=4, predictions=16, major=MAJOR, mps_dir=b"", epoch=7, client=3, head=0):
    to_daemon_offset = HEADER
    to_client_offset = to_daemon_offset + RING_CONTROL + to_daemon * SLOT
    predictions_offset = to_client_offset + RING_CONTROL + to_client * SLOT
    total = predictions_offset + predictions * 16
    header = struct.pack("<IHHIIQQIIQQQIIII", MAGIC, major, MINOR, HEADER, SLOT, total, epoch, client, 0,
                         to_daemon_offset, to_client_offset, predictions_offset, to_daemon, to_client, predictions, 0)
    header += struct.pack("<B7x", 1 if mps_dir else 0) + mps_dir.ljust(256, b"\0")
    body = bytearray(header.ljust(HEADER, b"\0") + b"\0" * (total - HEADER))
    struct.pack_into("<Q", body, to_client_offset, head)  # head of sluiced's ring to the client
    return bytes(body), total


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
    os.makedirs(out, exist_ok=True)
    good, size = segment()
    mps, mps_size = segment(mps_dir=b"/run/sluice/mps/pipe")
    decisions, _ = segment(head=2)
    seeds = {
        "accepted": welcome(segment_bytes=size) + b"\x10" + good,
        "accepted_mps": welcome(segment_bytes=mps_size) + b"\x18" + mps,
        "decisions_pending": welcome(segment_bytes=size) + b"\x01" + decisions,
        "refused": welcome(status=1, reason=b"sluiced speaks protocol 2.0, the client 1.2") + b"\x01",
        "not_sluiced": welcome(magic=0x12345678, segment_bytes=size) + b"\x01" + good,
        "two_descriptors": welcome(segment_bytes=size) + b"\x08" + good,
        "file_shorter_than_announced": welcome(segment_bytes=size) + b"\x01" + good[:HEADER + 100],
        "other_abi": welcome(segment_bytes=size) + b"\x01" + segment(major=2)[0],
        "other_epoch": welcome(segment_bytes=size, epoch=8) + b"\x01" + good,
        "huge_announced": welcome(segment_bytes=1 << 40) + b"\x01" + good,
    }
    for name, data in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
