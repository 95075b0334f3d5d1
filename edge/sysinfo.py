"""What machine a measurement was taken on (recorded beside every figure)."""
from __future__ import annotations

import os
import platform
import socket
from pathlib import Path


# The vector instructions int8 inference speed hangs on (XNNPACK): one "AMD EPYC" VM ran the shipped model in
# 0.4 ms, another, with AVX2 and no AVX-512, in 2.0 ms (benchmarks/results/host-speed.json)
SIMD = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "asimd",
        "asimddp", "i8mm", "sve")


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    flags: set[str] = set()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), cpu)
        flags = set(next((line.split(":", 1)[1].split() for line in lines
                          if line.startswith(("flags", "Features"))), []))
    except OSError:
        pass
    return {"host": socket.gethostname(), "cpu": cpu, "cores": os.cpu_count(), "arch": platform.machine(),
            "python": platform.python_version(), "simd": [f for f in SIMD if f in flags]}
