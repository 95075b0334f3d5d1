"""The device install on linux/aarch64 (tools/arm64_install_check.sh): slow, needs root, apt and the network.

Runs the whole check (Debian arm64 chroot under QEMU, pip install scopelite[edge] there, celledge info and
classify on the packaged model) into a temporary record and holds it to what docs/deploy.md claims.
"""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("apt-get") is None, reason="needs root and apt-get")
def test_edge_install_runs_on_aarch64_and_agrees_with_x86_64(tmp_path):
    out = tmp_path / "arm64-install.json"
    r = subprocess.run([str(ROOT / "tools" / "arm64_install_check.sh"), "--no-controls", "--out", str(out)],
                       capture_output=True, text=True, timeout=3600)
    assert r.returncode == 0, r.stderr[-3000:]
    rec = json.loads(out.read_text())
    arm = rec["aarch64"]
    assert arm["platform_machine"] == "aarch64" and arm["python"].startswith("3.11.")
    assert not arm["tensorflow_importable"]
    x86 = rec["x86_64_reference"]["probe"]["versions"]
    for dist in ("scopelite", "numpy", "opencv-python-headless", "ai-edge-litert", "click"):
        assert arm["versions"][dist] == x86[dist], dist  # the reference ran the same versions
    for cpu, run in rec["aarch64_runs"].items():
        assert "cpu: works here" in run["celledge_info"], cpu
        assert run["xnnpack_applied"], cpu
        c = run["vs_x86_64"]
        assert c["images"] >= 8 and c["top1_agree"] == c["images"], (cpu, c)
        assert c["within_one_int8_step"], (cpu, c["max_abs_score_diff"])
