"""Probe an install and write the record of tools/arm64_install_check.sh.

Two jobs, both stdlib-only so the file runs in a bare venv that has only ``scopelite[edge]``:

    python arm64_record.py probe                      # inside an install: what is this machine, what got installed
    python arm64_record.py report --work DIR --out F  # on the host: compare aarch64 with x86_64, write F (JSON)

``report`` reads what the shell script left in DIR (meta.json, timings.tsv, commands.tsv, probe-ARCH.json,
info-RUN.txt, classify-RUN.jsonl and classify's stderr in celledge-classify-RUN.log, RUN being x86_64 or
aarch64-CPU) and adds, for each emulated CPU, the comparison with x86_64: per image the top-1 label on both
machines and the largest difference of any class score, in steps of the model's int8 output.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

CONTROLS = {
    "aarch64-control-no-cpu-files": "qemu -cpu cortex-a76 without the /proc/cpuinfo and /sys CPU-list files: LiteRT's "
                                    "cpuinfo cannot start, so XNNPACK is not applied and TFLite's builtin kernels run",
    "aarch64-control-max": "qemu -cpu max (QEMU's every-feature CPU) with the Cortex-A76 files: XNNPACK applied",
}
DISTS = ("scopelite", "numpy", "opencv-python-headless", "ai-edge-litert", "click", "pip")


def probe() -> dict:
    """What this Python is, which versions of the edge stack it runs, and the packaged model's output scale."""
    import hashlib
    import importlib.metadata as md
    import importlib.util
    import platform

    import cv2
    import numpy

    from scopelite.edge import runtime, sysinfo
    from scopelite.edge.packaged import default_model

    model = default_model()
    out = runtime.make_interpreter(model).get_output_details()[0]
    scale, zero = out["quantization"]
    return {
        "platform_machine": platform.machine(),
        "python": platform.python_version(),
        "libc": "-".join(platform.libc_ver()),
        "sysinfo_machine": sysinfo.machine(),
        "versions": {d: md.version(d) for d in DISTS},
        "module_versions": {"numpy": numpy.__version__, "cv2": cv2.__version__},
        "tensorflow_importable": importlib.util.find_spec("tensorflow") is not None,
        "interpreter": runtime.runtime_name(),
        "packaged_model": {"path": str(model), "sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
                           "output_dtype": numpy.dtype(out["dtype"]).name, "output_scale": scale,
                           "output_zero_point": zero},
    }


def _records(path: Path, images_root: str) -> dict[str, dict]:
    """classify --json lines keyed by the image's path below the images folder (the same on both machines)."""
    recs = {}
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        key = rec["path"].split(images_root.rstrip("/") + "/", 1)[-1]
        recs[key] = rec
    return recs


def compare(arm: dict[str, dict], x86: dict[str, dict], step: float) -> dict:
    """Per image: top-1 on each machine and the largest |score difference| over all listed classes.

    ``step`` is one quantisation step of the model's output (scores are printed to 4 decimals, so a
    difference up to step + 1e-4 is one int8 step).
    """
    if sorted(arm) != sorted(x86):
        raise ValueError(f"the two machines classified different images: {sorted(set(arm) ^ set(x86))}")
    rows = []
    for key in sorted(arm):
        a = {c["label"]: c["score"] for c in arm[key]["top_k"]}
        b = {c["label"]: c["score"] for c in x86[key]["top_k"]}
        diff = max(abs(a.get(k, 0.0) - b.get(k, 0.0)) for k in a.keys() | b.keys())
        rows.append({"image": key, "aarch64": {"label": arm[key]["label"], "score": arm[key]["score"]},
                     "x86_64": {"label": x86[key]["label"], "score": x86[key]["score"]},
                     "max_abs_score_diff": round(diff, 4),
                     "stain_distance": {"aarch64": arm[key].get("stain_distance"),
                                        "x86_64": x86[key].get("stain_distance")}})
    worst = max(r["max_abs_score_diff"] for r in rows)
    return {"images": len(rows),
            "top1_agree": sum(r["aarch64"]["label"] == r["x86_64"]["label"] for r in rows),
            "identical_scores": sum(r["max_abs_score_diff"] == 0 for r in rows),
            "max_abs_score_diff": worst, "int8_output_step": step,
            "max_diff_int8_steps": round(worst / step, 1), "within_one_int8_step": worst <= step + 1e-4,
            "per_image": rows}


def _read_json(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def _lines(path: Path) -> list[str] | None:
    return path.read_text().splitlines() if path.is_file() else None


def _run(work: Path, name: str, images_root: str) -> dict:
    """One machine's celledge info / classify: their output, classify's stderr, whether XNNPACK was applied."""
    stderr = _lines(work / f"celledge-classify-{name}.log") or []
    cls = work / f"classify-{name}.jsonl"
    return {"celledge_info": _lines(work / f"info-{name}.txt"), "classify_stderr": stderr,
            "xnnpack_applied": any("XNNPACK delegate" in line for line in stderr),
            "celledge_classify": [json.loads(x) for x in cls.read_text().splitlines()] if cls.is_file() else None,
            "_records": _records(cls, images_root) if cls.is_file() else None}


def report(work: Path, out: Path) -> dict:
    meta = json.loads((work / "meta.json").read_text())
    arm_probe, x86_probe = (_read_json(work / f"probe-{arch}.json") for arch in ("aarch64", "x86_64"))
    timings = {}
    for line in (work / "timings.tsv").read_text().splitlines():
        name, secs = line.split("\t")
        timings[name] = round(float(secs), 1)
    commands: dict[str, list[str]] = {}
    for line in (work / "commands.tsv").read_text().splitlines():
        name, command = line.split("\t", 1)
        commands.setdefault(name, []).append(command)
    steps = [{"step": n, "seconds": timings.get(n), "commands": commands.get(n, [])}
             for n in [*timings, *(n for n in commands if n not in timings)]]
    x86 = _run(work, "x86_64", meta["images_dir"]["x86_64"])
    step = arm_probe["packaged_model"]["output_scale"] if arm_probe else 1 / 256
    runs = {}
    for cpu in meta["emulation"]["cpus"]:
        run = _run(work, f"aarch64-{cpu}", meta["images_dir"]["aarch64"])
        if run["_records"] is not None and x86["_records"] is not None:
            run["vs_x86_64"] = compare(run["_records"], x86["_records"], step)
        runs[cpu] = {k: v for k, v in run.items() if k != "_records"}
    controls = {}
    for name, what in CONTROLS.items():
        run = _run(work, name, meta["images_dir"]["aarch64"])
        if run["_records"] is not None and x86["_records"] is not None:
            c = compare(run["_records"], x86["_records"], step)
            controls[name] = {"what": what, "xnnpack_applied": run["xnnpack_applied"],
                              "classify_stderr": run["classify_stderr"],
                              "vs_x86_64": {k: v for k, v in c.items() if k != "per_image"}}
    result = {**meta, "timings_s": timings, "steps": steps, "aarch64": arm_probe, "aarch64_runs": runs,
              "controls": controls,
              "x86_64_reference": {"probe": x86_probe, **{k: v for k, v in x86.items() if k != "_records"}}}
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(out)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("probe", help="print this install's machine and versions as JSON")
    rp = sub.add_parser("report", help="compare and write the record")
    rp.add_argument("--work", type=Path, required=True)
    rp.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.cmd == "probe":
        print(json.dumps(probe(), indent=2))
        return 0
    r = report(args.work, args.out)
    for cpu, run in [*r["aarch64_runs"].items(), *r["controls"].items()]:
        c = run.get("vs_x86_64")
        if c:
            print(f"{cpu} vs x86_64: top-1 agrees on {c['top1_agree']}/{c['images']} images, scores identical "
                  f"on {c['identical_scores']}, largest difference {c['max_abs_score_diff']} "
                  f"({c['max_diff_int8_steps']} int8 steps)")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
