"""Collect the demo runs of tools/demo_seeds.sh into one record: per seed, whether the demo passed,
float and int8 accuracy, the post-training int8 model's accuracy and gate, whether quantisation-aware
training had to step in, and the wall time with how busy the cores were.

    python tools/demo_seeds.py /tmp/demo-seeds benchmarks/results/demo-seeds.json --command "..."
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
from pathlib import Path

from scopelite.edge.bundle import write_json_atomic
from scopelite.edge.sysinfo import machine


def _json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def contention(path: Path) -> dict | None:
    """Other `celltrain fit` processes and the 1-minute load average, sampled every 20 s."""
    try:
        samples = [line.split() for line in path.read_text().splitlines() if len(line.split()) == 3]
    except OSError:
        return None
    if not samples:
        return None
    return {"samples": len(samples), "other_trainings_max": max(int(s[1]) for s in samples),
            "share_with_other_trainings": round(sum(int(s[1]) > 0 for s in samples) / len(samples), 3),
            "load_average_mean": round(statistics.mean(float(s[2]) for s in samples), 2)}


def seed_record(root: Path, run: dict) -> dict:
    seed = run["seed"]
    summary = _json(root / f"seed{seed}" / "summary.json") or {}
    report = _json(root / f"seed{seed}" / "int8" / "report.json") or {}
    ptq = report.get("variants", {}).get("int8", {})
    log = (root / f"seed{seed}.log").read_text(errors="replace") if (root / f"seed{seed}.log").exists() else ""
    errors = [line.strip() for line in log.splitlines() if line.startswith("Error:")]
    return {
        "seed": seed,
        "passed": run["rc"] == 0 and bool(summary),
        "exit_code": run["rc"],
        "float_test_accuracy": summary.get("float_test_accuracy", report.get("float", {}).get("clean", {}).get("accuracy")),
        "int8_test_accuracy": summary.get("int8_test_accuracy"),
        "float_corrupted_accuracy": summary.get("float_corrupted_accuracy"),
        "int8_corrupted_accuracy": summary.get("int8_corrupted_accuracy"),
        "approved_variant": (report.get("approved") or {}).get("variant"),
        "post_training_int8": {"clean": ptq.get("clean", {}).get("accuracy"),
                               "corrupted": ptq.get("corrupted", {}).get("accuracy"),
                               "gate_passed": ptq.get("gate", {}).get("passed")} if ptq else None,
        "automatic_qat": bool(report.get("automatic_qat")),
        "watch_frame_accuracy_vs_truth": summary.get("watch_frame_accuracy_vs_truth"),
        "wall_s": run["wall_s"],
        "waited_for_other_training_s": run.get("waited_s"),
        "contention": contention(root / f"contention-{seed}.txt"),
        **({"error": errors[-1]} if errors else {}),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("record", type=Path)
    ap.add_argument("--command", required=True)
    ap.add_argument("--note", default=None, help="Anything the figures need said (what else ran, code changes).")
    args = ap.parse_args()
    runs = [json.loads(x) for x in (args.root / "runs.jsonl").read_text().splitlines() if x.strip()]
    seeds = [seed_record(args.root, r) for r in runs]
    walls = [s["wall_s"] for s in seeds]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True).stdout.strip())
    except OSError:
        head, dirty = None, None
    write_json_atomic(args.record, {
        "what": "./demo.sh once per seed (synthetic smears -> EfficientNetV2B0 64x64 from scratch, 6 epochs -> "
                "full-int8 TFLite behind the gate -> celledge watch), seeds run one after another",
        "command": args.command,
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "code": {"git_head": head, "uncommitted_changes": dirty},
        **({"note": args.note} if args.note else {}),
        "passed": sum(s["passed"] for s in seeds),
        "runs": len(seeds),
        "post_training_int8_passed_gate": sum(bool(s["post_training_int8"] and s["post_training_int8"]["gate_passed"])
                                              for s in seeds),
        "automatic_qat": sum(s["automatic_qat"] for s in seeds),
        "wall_s": {"median": statistics.median(walls), "min": min(walls), "max": max(walls)} if walls else None,
        "seeds": seeds,
    })
    print(f"{sum(s['passed'] for s in seeds)} of {len(seeds)} demo runs passed -> {args.record}")


if __name__ == "__main__":
    main()
