"""celltrain fit --strategy multiworker: TF_CONFIG checks, the wait for peers, two real workers on loopback."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import assert_one_line_error, run_cli

from scopelite.edge.errors import UserError
from scopelite.train.multiworker import eval_batch_size, loopback_cluster, parse_tf_config, tf_config

TINY = ["--arch", "tiny", "--image-size", "32", "--synthetic-per-class", "20", "--epochs", "1", "--quiet"]


def _celltrain(args: list[str], env: dict, **kw) -> subprocess.Popen:
    exe = Path(sys.executable).parent / "celltrain"
    return subprocess.Popen([str(exe), *args], env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def _finish(procs: list[subprocess.Popen], timeout: float) -> list[subprocess.CompletedProcess]:
    """Wait for every worker; SIGKILL the rest after ``timeout`` (TensorFlow ignores SIGTERM while it waits)."""
    end = time.monotonic() + timeout
    out = []
    for p in procs:
        try:
            so, se = p.communicate(timeout=max(end - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.send_signal(signal.SIGKILL)
            so, se = p.communicate()
            se += f"\n[test] killed after {timeout} s"
        out.append(subprocess.CompletedProcess(p.args, p.returncode, so, se))
    return out


def test_tf_config_parsing():
    c = parse_tf_config(tf_config(["127.0.0.1:1111", "127.0.0.1:2222"], 1))
    assert (c.num_workers, c.rank, c.is_chief, c.address) == (2, 1, False, "127.0.0.1:2222")
    assert parse_tf_config('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}').is_chief
    cluster = loopback_cluster(3)
    assert len(set(cluster)) == 3 and all(a.startswith("127.0.0.1:") for a in cluster)
    assert json.loads(tf_config(cluster, 2)) == {"cluster": {"worker": cluster}, "task": {"type": "worker", "index": 2}}
    chief = parse_tf_config(json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:2"]},
                                        "task": {"type": "worker", "index": 0}}))
    assert (chief.num_workers, chief.rank, chief.is_chief) == (2, 1, False)  # with a chief task, worker 0 is not it
    bad = {None: "is not set", "{oops": "not valid JSON", "[]": 'no "cluster"',
           '{"cluster": {"worker": ["a:1"], "ps": ["b:2"]}, "task": {"type": "worker", "index": 0}}': "'ps'",
           '{"cluster": {"worker": ["nohost"]}, "task": {"type": "worker", "index": 0}}': "host:port",
           '{"cluster": {"worker": ["a:1", "a:1"]}, "task": {"type": "worker", "index": 0}}': "twice",
           '{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 2}}': "task index 2",
           '{"cluster": {"worker": ["a:1"]}}': 'no "task"'}
    for text, needle in bad.items():
        with pytest.raises(UserError, match=re.escape(needle)):
            parse_tf_config(text)


def test_cli_rejects_missing_or_bad_tf_config_in_a_second(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    t0 = time.monotonic()
    r = run_cli("celltrain", "fit", "--strategy", "multiworker", "--out", str(tmp_path / "a"), *TINY, env=env)
    assert_one_line_error(r, "TF_CONFIG is not set", code=2)
    r = run_cli("celltrain", "fit", "--strategy", "multiworker", "--out", str(tmp_path / "a"), *TINY,
                env={**env, "TF_CONFIG": '{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"index": 0}'})
    assert_one_line_error(r, "TF_CONFIG is not valid JSON", code=2)
    assert time.monotonic() - t0 < 30  # checked before TensorFlow is imported
    assert not (tmp_path / "a").exists()


def test_eval_batch_size_leaves_no_replica_empty():
    for n in range(1, 80):
        for batch in (1, 2, 3, 7, 16, 32, 100):
            for replicas in (1, 2, 3, 4):
                if n < replicas:
                    with pytest.raises(UserError, match="fewer than"):
                        eval_batch_size(n, batch, replicas)
                    continue
                b = eval_batch_size(n, batch, replicas)
                assert replicas <= b <= n and (n % b == 0 or n % b >= replicas), (n, batch, replicas, b)
                if replicas <= batch <= n and (n % batch == 0 or n % batch >= replicas):
                    assert b == batch  # a batch size that already works is kept


def test_a_worker_alone_gives_up_after_the_timeout(tmp_path):
    cluster = loopback_cluster(2)
    t0 = time.monotonic()
    p = _celltrain(["fit", "--strategy", "multiworker", "--worker-timeout", "3", "--out", str(tmp_path / "run"),
                    *TINY], {"TF_CONFIG": tf_config(cluster, 1)})
    (r,) = _finish([p], timeout=180)
    assert "[test] killed" not in r.stderr, "the worker did not give up by itself"
    assert r.returncode != 0 and "Traceback" not in r.stderr
    err = [line for line in r.stderr.splitlines() if line.startswith("Error")]
    assert len(err) == 1 and "waited 3 s for the other 1 worker(s)" in err[0], r.stderr[-2000:]
    assert time.monotonic() - t0 < 120
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # two TensorFlow processes on two cores: ~40-80 s
def test_two_workers_on_loopback_train_in_step(tmp_path):
    from scopelite.train._keras import keras
    from scopelite.train.multiworker import weights_sha256

    cluster = loopback_cluster(2)
    chief_out, other_out = tmp_path / "run", tmp_path / "run-worker1"
    scratch = tmp_path / "tmp1"  # worker 1's TMPDIR: its temporary run folder must be gone afterwards
    scratch.mkdir()
    procs = [_celltrain(["fit", "--strategy", "multiworker", "--out", str(out), *TINY],
                        {"TF_CONFIG": tf_config(cluster, i), **({"TMPDIR": str(scratch)} if i else {})})
             for i, out in enumerate((chief_out, other_out))]
    chief, other = _finish(procs, timeout=500)
    assert chief.returncode == 0, chief.stderr[-3000:]
    assert other.returncode == 0, other.stderr[-3000:]

    assert not other_out.exists() and list(scratch.iterdir()) == []
    side = json.loads((chief_out / "model.json").read_text())["provenance"]["training"]
    assert side["config"]["strategy"] == "multiworker" and side["extra"]["replicas"] == 2
    mw = side["extra"]["multiworker"]
    assert mw["workers"] == 2 and mw["cluster"] == cluster
    n_train = len(json.loads((chief_out / "split.json").read_text())["train"])
    assert mw["steps"] == n_train // 32 and mw["global_batch_size"] == 32  # global batch; last partial one dropped

    # both workers report the same steps and final weights, and the shipped model has those weights
    line = re.compile(r"(\d+) steps of global batch 32 on 2 workers; final weights sha256 ([0-9a-f]{64})")
    seen = [line.search(r.stdout) for r in (chief, other)]
    assert all(seen), (chief.stdout[-1500:], other.stdout[-1500:])
    assert f"worker 1: {seen[1].group(0)}" in other.stdout  # the other worker's lines say whose they are
    assert [(int(m.group(1)), m.group(2)) for m in seen] == [(mw["steps"], mw["weights_sha256"])] * 2
    model = keras.models.load_model(chief_out / "model.keras", compile=False)
    assert weights_sha256(model.get_weights()) == mw["weights_sha256"]
