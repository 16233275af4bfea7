#!/usr/bin/env -S python3 -S
"""A stand-in for nvidia-cuda-mps-control, for tests of sluiced's mps mode without a GPU.

  fake_mps_control.py -d     start the control daemon (daemonizes; returns once it listens)
  fake_mps_control.py        a client: sends each stdin line to the daemon, prints the answers

Like the real program it finds its daemon through CUDA_MPS_PIPE_DIRECTORY and logs to
CUDA_MPS_LOG_DIRECTORY/control.log (every command it receives, one per line). The daemon answers
`get_server_list` (no servers: an empty answer) and `quit` (it exits). A client that finds no
daemon prints "Cannot find MPS control daemon process" and exits 1, as the real one does.

Failure injection for tests (environment of `-d`):
  FAKE_MPS_START_FAIL=1   `-d` fails at once with a message
  FAKE_MPS_MUTE=1         the daemon starts but never answers (health checks time out)
"""

import os
import socket
import sys
import time


def dirs():
    pipe = os.environ.get("CUDA_MPS_PIPE_DIRECTORY", "/tmp/nvidia-mps")
    log = os.environ.get("CUDA_MPS_LOG_DIRECTORY", "/var/log/nvidia-mps")
    return pipe, log


def log_line(log_dir, text):
    with open(os.path.join(log_dir, "control.log"), "a") as f:
        f.write(text + "\n")


def serve(pipe_dir, log_dir, listener):
    mute = os.environ.get("FAKE_MPS_MUTE") == "1"
    with open(os.path.join(pipe_dir, "control.pid"), "w") as f:
        f.write(f"{os.getpid()}\n")
    log_line(log_dir, "started")
    # A test that kills sluiced (SIGKILL) and removes its directory leaves nobody to send quit:
    # the daemon goes away with its pipe directory.
    listener.settimeout(0.5)
    while True:
        try:
            conn, _ = listener.accept()
        except socket.timeout:
            if not os.path.exists(os.path.join(pipe_dir, "control")):
                return
            continue
        conn.settimeout(None)
        with conn:
            data = b""
            while not data.endswith(b"\n"):
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            command = data.decode(errors="replace").strip()
            log_line(log_dir, command)
            if mute:
                time.sleep(3600)
            if command == "quit":
                log_line(log_dir, "exiting")  # before anyone can see it gone
                listener.close()
                os.unlink(os.path.join(pipe_dir, "control"))
                os.unlink(os.path.join(pipe_dir, "control.pid"))
                conn.sendall(b"\n")
                return
            conn.sendall(b"\n" if command == "get_server_list" else b"unknown command\n")


def start_daemon():
    pipe_dir, log_dir = dirs()
    if os.environ.get("FAKE_MPS_START_FAIL") == "1":
        print("An instance of this daemon is already running (injected failure)", file=sys.stderr)
        return 1
    for d in (pipe_dir, log_dir):
        if not os.path.isdir(d):
            print(f"{d}: no such directory", file=sys.stderr)
            return 1
    path = os.path.join(pipe_dir, "control")
    if os.path.exists(path):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    if os.fork() != 0:
        return 0  # the daemon listens already: the caller may connect at once
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    try:
        serve(pipe_dir, log_dir, listener)
    finally:
        os._exit(0)


def client():
    pipe_dir, _ = dirs()
    for line in sys.stdin.read().splitlines():
        if not line.strip():
            continue
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(os.path.join(pipe_dir, "control"))
        except OSError:
            print("Cannot find MPS control daemon process")
            return 1
        s.sendall(line.strip().encode() + b"\n")
        answer = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk
            if answer.endswith(b"\n"):
                break
        s.close()
        sys.stdout.write(answer.decode(errors="replace"))
    return 0


if __name__ == "__main__":
    sys.exit(start_daemon() if sys.argv[1:] == ["-d"] else client())
