"""Run `celltrain fit --strategy multiworker` as N workers on this machine (127.0.0.1) and record it.

    python tools/multiworker_loopback.py --out benchmarks/results/multiworker-loopback.json \\
        -- --arch tiny --image-size 32 --synthetic-per-class 40 --epochs 5

Every worker is one `celltrain fit` process with its own TF_CONFIG (free ports on 127.0.0.1);
worker 0 is the chief and writes the run folder. With ``--reference`` the same fit also runs
once as a single process (--strategy none), for comparison. The record holds the commands,
the machine, the date, each worker's exit status, wall time, steps and final-weights hash, and
the chief's held-out metrics. Loopback proves the mechanics (cluster, sharding, lock-step
weights, chief-only output), not a speed-up: the workers share this machine's cores.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from scopelite.train.multiworker import loopback_cluster, tf_config  # no TensorFlow: that loads in the workers

LINE = re.compile(r"(\d+) steps of global batch (\d+) on (\d+) workers; final weights sha256 ([0-9a-f]{64})")


def _celltrain() -> str:
    return str(Path(sys.executable).parent / "celltrain")


def run_workers(n: int, out: Path, fit_args: list[str], timeout: float) -> dict:
    cluster = loopback_cluster(n)
    procs, t0 = [], time.monotonic()
    for i in range(n):
        env = {**os.environ, "TF_CONFIG": tf_config(cluster, i)}
        cmd = [_celltrain(), "fit", "--strategy", "multiworker", "--out", str(out), "--quiet", *fit_args]
        procs.append((cmd, time.monotonic(), subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                                              stderr=subprocess.PIPE, text=True)))

    def finish(i: int) -> dict:
        _, start, p = procs[i]
        try:
            so, se = p.communicate(timeout=max(timeout - (time.monotonic() - t0), 1))
        except subprocess.TimeoutExpired:
            for *_, q in procs:
                q.kill()  # SIGKILL: TensorFlow ignores SIGTERM while it waits for peers
            so, se = p.communicate()
        m = LINE.search(so)
        return {"index": i, "exit_status": p.returncode, "wall_seconds": round(time.monotonic() - start, 1),
                "steps": int(m.group(1)) if m else None, "weights_sha256": m.group(4) if m else None,
                "stderr_tail": se.strip().splitlines()[-3:] if p.returncode else []}

    with ThreadPoolExecutor(n) as pool:  # one waiter per worker: each one's own end time
        workers = list(pool.map(finish, range(n)))
    return {"command": f"TF_CONFIG='{{\"cluster\": {{\"worker\": {json.dumps(cluster)}}}, \"task\": {{\"type\": "
                       f"\"worker\", \"index\": I}}}}' " + shlex.join(["celltrain", *procs[0][0][1:]])
                       + f"  # I = 0..{n - 1}, one process each",
            "wall_seconds": round(time.monotonic() - t0, 1), "workers": workers}


def _sidecar_summary(run: Path) -> dict:
    side = json.loads((run / "model.json").read_text())
    training = side["provenance"]["training"]
    metrics = side.get("metrics") or side["provenance"].get("metrics") or {}
    return {"test_accuracy": metrics.get("test", {}).get("accuracy"),
            "test_macro_f1": metrics.get("test", {}).get("macro_f1"),
            "val_accuracy": metrics.get("val", {}).get("accuracy"),
            "train_seconds": metrics.get("train_seconds"),
            "sidecar_multiworker": training["extra"].get("multiworker"),
            "sidecar_replicas": training["extra"].get("replicas")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="the JSON record to write")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--reference", action="store_true", help="also run the same fit as one process")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("fit_args", nargs=argparse.REMAINDER, help="-- then celltrain fit options")
    a = ap.parse_args()
    fit_args = [x for x in a.fit_args if x != "--"]

    from scopelite.edge.bundle import write_json_atomic
    from scopelite.edge.sysinfo import machine

    with tempfile.TemporaryDirectory(prefix="mw-loopback-") as work:
        run = Path(work) / "run"
        rec = run_workers(a.workers, run, fit_args, a.timeout)
        ok = all(w["exit_status"] == 0 for w in rec["workers"])
        rec["chief_run"] = _sidecar_summary(run) if ok else None
        rec["weights_agree"] = ok and len({w["weights_sha256"] for w in rec["workers"]}) == 1
        rec["steps_agree"] = ok and len({w["steps"] for w in rec["workers"]}) == 1
        if a.reference:
            ref, t0 = Path(work) / "reference", time.monotonic()
            cmd = [_celltrain(), "fit", "--out", str(ref), "--quiet", *fit_args]
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout)
            rec["reference_single_process"] = {
                "command": shlex.join(["celltrain", *cmd[1:]]).replace(str(ref), "runs/reference"),
                "exit_status": r.returncode, "wall_seconds": round(time.monotonic() - t0, 1),
                **(_sidecar_summary(ref) if r.returncode == 0 else {"stderr_tail": r.stderr.splitlines()[-3:]})}
        rec["command"] = rec["command"].replace(str(run), "runs/mw")
    from scopelite.train._keras import tf  # noqa: PLC0415 - for the version line only

    record = {"what": f"celltrain fit --strategy multiworker: {a.workers} worker processes on 127.0.0.1 "
                      "(tf.distribute.MultiWorkerMirroredStrategy over gRPC on loopback)",
              "tool": "python tools/multiworker_loopback.py --out " + a.out
                      + (" --reference" if a.reference else "") + " -- " + shlex.join(fit_args),
              "machine": {**machine(), "tensorflow": tf.__version__},
              "date": dt.date.today().isoformat(), **rec}
    write_json_atomic(Path(a.out), record)
    print(json.dumps({k: record[k] for k in ("wall_seconds", "weights_agree", "steps_agree")}))
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
