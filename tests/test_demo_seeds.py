"""tools/demo_seeds.py: the record of repeated demo runs (tools/demo_seeds.sh)."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_record_counts_passes_qat_and_contention(tmp_path):
    runs = tmp_path / "demo"
    (runs / "seed0" / "int8").mkdir(parents=True)
    (runs / "seed1" / "int8").mkdir(parents=True)
    (runs / "runs.jsonl").write_text('{"seed": 0, "rc": 0, "wall_s": 200, "waited_s": 0, "start": 1}\n'
                                     '{"seed": 1, "rc": 3, "wall_s": 500, "waited_s": 15, "start": 2}\n')
    (runs / "seed0" / "summary.json").write_text(json.dumps(
        {"float_test_accuracy": 0.99, "int8_test_accuracy": 0.98, "watch_frame_accuracy_vs_truth": 0.9}))
    (runs / "seed0" / "int8" / "report.json").write_text(json.dumps(
        {"approved": {"variant": "int8"}, "variants": {"int8": {"clean": {"accuracy": 0.98},
                                                                "corrupted": {"accuracy": 0.7}, "gate": {"passed": True}}}}))
    (runs / "seed1" / "int8" / "report.json").write_text(json.dumps(
        {"approved": None, "automatic_qat": True, "float": {"clean": {"accuracy": 0.97}},
         "variants": {"int8": {"clean": {"accuracy": 0.5}, "corrupted": {"accuracy": 0.4}, "gate": {"passed": False}}}}))
    (runs / "seed1.log").write_text("...\nError: no int8 model approved (int8: ...)\n")
    (runs / "contention-0.txt").write_text("100 0 1.5\n120 2 3.5\n")
    out = tmp_path / "record.json"
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "demo_seeds.py"), str(runs), str(out),
                        "--command", "tools/demo_seeds.sh X Y 0 1"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "1 of 2 demo runs passed" in r.stdout
    rec = json.loads(out.read_text())
    assert (rec["passed"], rec["runs"], rec["automatic_qat"], rec["post_training_int8_passed_gate"]) == (1, 2, 1, 1)
    s0, s1 = rec["seeds"]
    assert s0["passed"] and s0["approved_variant"] == "int8" and s0["post_training_int8"]["clean"] == 0.98
    assert s0["contention"] == {"samples": 2, "other_trainings_max": 2, "share_with_other_trainings": 0.5,
                                "load_average_mean": 2.5}
    assert not s1["passed"] and s1["exit_code"] == 3 and s1["error"].startswith("Error: no int8 model approved")
    assert s1["float_test_accuracy"] == 0.97 and s1["contention"] is None
    assert rec["wall_s"] == {"median": 350.0, "min": 200, "max": 500} and rec["command"].startswith("tools/demo_seeds.sh")
