"""Where a build directory keeps what the demo and the integration tests run."""

import os


def binaries(build):
    build = os.path.abspath(build)
    return {
        "sluiced": os.path.join(build, "scheduler", "sluiced"),
        "sluicectl": os.path.join(build, "tools", "sluicectl", "sluicectl"),
        "loadgen": os.path.join(build, "tools", "loadgen", "sluice-loadgen"),
        "shim": os.path.join(build, "shim", "libsluice.so"),
        "fake": os.path.join(build, "fake", "libcuda.so.1"),
    }
