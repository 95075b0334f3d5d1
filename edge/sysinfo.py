"""What machine a measurement was taken on (recorded beside every figure)."""
from __future__ import annotations

import os
import platform
import socket
from pathlib import Path


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"host": socket.gethostname(), "cpu": cpu, "cores": os.cpu_count(), "arch": platform.machine(),
            "python": platform.python_version()}
