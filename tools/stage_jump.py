"""How StageMotion tells a moving view from a jump to another field (edge/track.py, ``StageMotion.jumped``).

Measures, for consecutive frames of generated slide scans (one view moving: pans, jerks, pauses, refocusing) and for
pairs of different fields (PBC's and DeepBioNet's, in a shuffled order), the two numbers the jump test reads: the
phase-correlation peak of the frames 4x smaller, and ``detail_match`` at the shift it finds. Then counts field mode
(tracking on, the default for a video) on videos made of different fields, each shown 1 or 3 frames, against the
same fields as a folder. Writes benchmarks/results/stage-jump.json.

    python tools/stage_jump.py --data ../shared/data [--before /tmp/snap]   # snap: git archive of an earlier commit
"""
import argparse
import datetime
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from scopelite.edge.sources import list_images
from scopelite.edge.sysinfo import machine
from scopelite.edge.track import MIN_DETAIL, StageMotion, detail_match

RULE = StageMotion()  # the thresholds the daemon uses
from scopelite.train.slide import make_slide_scan


def pair_measures(a: np.ndarray, b: np.ndarray) -> tuple[float, float, bool] | None:
    """(coarse peak, detail match, a part shared) of two RGB frames of one size, as StageMotion reads them: the jump
    test's two numbers, and whether ``StageMotion.overlap`` finds a part they share (then it is no jump: a pan
    faster than half a field a frame)."""
    grey = [cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
            .astype(np.float32) for f in (a, b)]
    if grey[0].shape != grey[1].shape:
        return None
    coarse = [cv2.resize(g, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA) for g in grey]
    win = cv2.createHanningWindow(coarse[0].shape[::-1], cv2.CV_32F)
    (cx, cy), r = cv2.phaseCorrelate(coarse[0], coarse[1], win)
    return float(r), detail_match(grey[0], grey[1], 2 * cx, 2 * cy), RULE.overlap(grey[0], grey[1]) is not None


def summary(values: list[tuple[float, float, bool]]) -> dict:
    r = np.array([v[0] for v in values])
    d = np.array([v[1] for v in values])
    shared = np.array([v[2] for v in values])
    unlike = (r < RULE.jump_response) | ((r < RULE.check_response) & (d < RULE.jump_detail))
    jumped = unlike & ~shared
    return {"pairs": len(values), "peak": {"min": round(float(r.min()), 3), "median": round(float(np.median(r)), 3),
                                           "max": round(float(r.max()), 3)},
            "detail": {"min": round(float(d.min()), 3), "median": round(float(np.median(d)), 3),
                       "max": round(float(d.max()), 3)},
            "unlike": int(unlike.sum()), "called_a_jump": int(jumped.sum())}


def count(cmd: list[str], env: dict | None = None) -> dict:
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout.splitlines()[-1]
    s = json.loads(out)["summary"]
    d = s["differential"]
    return {"white": d["white_total"], "uncertain": d["uncertain"]["count"], "frames": s["frames"],
            "view_jumps": s.get("tracking", {}).get("view_jumps")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--before", metavar="PYTHONPATH", default=None,
                    help="also count the videos with the scopelite found there (an export of an earlier commit)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "stage-jump.json"))
    a = ap.parse_args()
    rec: dict = {"what": __doc__.splitlines()[0], "command": "python " + " ".join(sys.argv),
                 "machine": machine(), "date": datetime.date.today().isoformat(),
                 "data": "PBC (Acevedo et al., Data in Brief 2020) pbc-fields; DeepBioNet (Shams et al., Blood Cells "
                         "Mol Dis 2024) fields; generated slide scans (train/slide.py, seeds 0-7)",
                 "rule": f"unlike: peak < {RULE.jump_response}, or peak < {RULE.check_response} and detail < "
                         f"{RULE.jump_detail}; a jump: unlike, and no part of at least {RULE.min_share} of the frame "
                         f"shared with detail >= {MIN_DETAIL} (StageMotion.overlap, session 35) (StageMotion defaults)"}
    scan = []
    for seed in range(8):
        s = make_slide_scan(seed, slide_size=(1000, 760), speed=(8.0, 20.0))
        frames = [s.frame(i) for i in range(len(s))]
        scan += [pair_measures(x, y) for x, y in zip(frames, frames[1:])]
    rec["scan_consecutive_frames"] = summary(scan)
    bin_dir = Path(sys.executable).parent
    rec["different_fields"], rec["videos"] = {}, {}
    for name, sub in (("pbc", "pbc-fields"), ("deepbionet", "other-labs/deepbionet/fields")):
        files = list_images([Path(a.data) / sub])
        random.Random(1).shuffle(files)
        ims = [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files[:160]]
        pairs = [m for m in (pair_measures(x, y) for x, y in zip(ims, ims[1:])) if m is not None]
        rec["different_fields"][name] = summary(pairs)
        size = ims[0].shape[:2]
        same = [im for im in ims if im.shape[:2] == size][:20]
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "fields"
            folder.mkdir()
            for i, im in enumerate(same):
                cv2.imwrite(str(folder / f"{i:02d}.png"), cv2.cvtColor(im, cv2.COLOR_RGB2BGR))
            row = {"fields": len(same), "as_a_folder": count([str(bin_dir / "celledge"), "watch", str(folder),
                                                              "--mode", "field"])}
            for repeat in (1, 3):
                video = Path(tmp) / f"x{repeat}.avi"
                w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (size[1], size[0]))
                for im in same:
                    for _ in range(repeat):
                        w.write(cv2.cvtColor(im, cv2.COLOR_RGB2BGR))
                w.release()
                cmd = [str(bin_dir / "celledge"), "watch", str(video), "--mode", "field"]
                row[f"video_{repeat}_frame_each"] = count(cmd)
                if a.before:
                    row[f"video_{repeat}_frame_each_before"] = count(cmd, {**os.environ, "PYTHONPATH": a.before})
            rec["videos"][name] = row
        print(name, rec["different_fields"][name], row, flush=True)
    print("scan", rec["scan_consecutive_frames"])
    Path(a.out).write_text(json.dumps(rec, indent=1) + "\n")


if __name__ == "__main__":
    main()
