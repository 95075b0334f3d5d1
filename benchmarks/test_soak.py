"""Soak: the daemon on a looped video for --soak SECONDS (600 for the real test); RSS must stay flat.

    pytest benchmarks/test_soak.py --soak 600
"""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def test_daemon_memory_is_flat(request, record, tmp_path):
    seconds = request.config.getoption("--soak")
    if not seconds:
        pytest.skip("soak test is opt-in: pytest benchmarks/test_soak.py --soak 600")
    from scopelite.train.synth import write_video

    video = tmp_path / "loop.avi"
    write_video(video, n_per_class=1, frames_per_cell=4, seed=3)
    model = request.config.getoption("--model") or _packaged_or_skip()
    exe = Path(sys.executable).parent / "celledge"
    p = subprocess.Popen([str(exe), "watch", str(video), "--loop", "--model", str(model), "--fps", "60",
                          "--http", "127.0.0.1:0", "--out", str(tmp_path / "frames.jsonl")],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    warm = min(60.0, seconds / 5)
    time.sleep(warm)
    samples = [(time.monotonic(), _rss_mb(p.pid))]
    end = time.monotonic() + seconds - warm
    while time.monotonic() < end and p.poll() is None:
        time.sleep(5)
        samples.append((time.monotonic(), _rss_mb(p.pid)))
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=10)
    last = json.loads((tmp_path / "frames.jsonl").read_text().splitlines()[-1])["summary"]
    growth = samples[-1][1] - samples[0][1]
    record.add("soak: RSS growth after warm-up (MB)", growth_mb=round(growth, 2), seconds=seconds,
               frames=last["frames"], start_mb=round(samples[0][1], 1), end_mb=round(samples[-1][1], 1))
    assert last["frames"] > seconds * 10
    assert growth < 10.0, samples


def _packaged_or_skip():
    from scopelite.edge.packaged import default_model

    return default_model()
