"""Training on several machines: TF_CONFIG, which worker is the chief, and the wait for the others.

``celltrain fit --strategy multiworker`` runs the same command on every machine, each with
its own TF_CONFIG (the same cluster, its own task index). TensorFlow's
MultiWorkerMirroredStrategy keeps one copy of the model per worker and all-reduces the
gradients every step, so the copies stay identical. The chief (task "chief", or worker 0)
writes the run folder; every other worker trains in a temporary folder that is deleted
when it ends (saving must still happen on every worker: reading BatchNorm statistics is a
collective operation).

Reading TF_CONFIG imports no TensorFlow, so the CLI rejects a bad one in a second.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from scopelite.edge.errors import UserError

ENV = "TF_CONFIG"
EXAMPLE = ('TF_CONFIG=\'{"cluster": {"worker": ["10.0.0.1:12345", "10.0.0.2:12345"]}, '
           '"task": {"type": "worker", "index": 0}}\' (index 1 on the second machine)')
JOBS = ("chief", "worker")


@dataclass(frozen=True)
class Cluster:
    """This process's place in the cluster that TF_CONFIG describes."""

    chief: tuple[str, ...]  # empty, or the one "chief" task's address
    workers: tuple[str, ...]
    task_type: str  # "chief" | "worker"
    index: int

    @property
    def num_workers(self) -> int:
        return len(self.chief) + len(self.workers)

    @property
    def rank(self) -> int:
        """0 for the chief, then 1, 2, ... (TensorFlow's id in cluster)."""
        return 0 if self.task_type == "chief" else self.index + len(self.chief)

    @property
    def is_chief(self) -> bool:
        return self.rank == 0

    @property
    def address(self) -> str:
        return (self.chief if self.task_type == "chief" else self.workers)[self.index]

    def to_json(self) -> dict:
        return {"workers": self.num_workers, "chief": (self.chief or self.workers)[0],
                "cluster": list(self.chief + self.workers)}


def _bad(why: str) -> UserError:
    return UserError(f"--strategy multiworker: {ENV} {why}; e.g. {EXAMPLE}")


def _addresses(job: str, value) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise _bad(f'cluster "{job}" must be a non-empty list of "host:port" strings, not {json.dumps(value)}')
    for a in value:
        host, _, port = str(a).rpartition(":") if isinstance(a, str) else ("", "", "")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise _bad(f'cluster "{job}" entry {json.dumps(a)} is not "host:port"')
    return tuple(value)


def parse_tf_config(text: str | None) -> Cluster:
    """The cluster and this task from TF_CONFIG's text.

    Raises:
        UserError: TF_CONFIG is unset, not JSON, or not a cluster of "chief"/"worker" tasks
            with this task in it.
    """
    if not text or not text.strip():
        raise _bad("is not set: every worker needs it, with the same cluster and its own task index")
    try:
        conf = json.loads(text)
    except json.JSONDecodeError as e:
        raise _bad(f"is not valid JSON ({e.msg} at character {e.pos})") from None
    cluster = conf.get("cluster") if isinstance(conf, dict) else None
    task = conf.get("task") if isinstance(conf, dict) else None
    if not isinstance(cluster, dict) or "worker" not in cluster and "chief" not in cluster:
        raise _bad('has no "cluster" with a "worker" list')
    other = sorted(set(cluster) - set(JOBS))
    if other:
        raise _bad(f"lists {', '.join(map(repr, other))} tasks; MultiWorkerMirroredStrategy uses only "
                   "'worker' (and at most one 'chief')")
    chief = _addresses("chief", cluster["chief"]) if "chief" in cluster else ()
    workers = _addresses("worker", cluster["worker"]) if "worker" in cluster else ()
    if len(chief) > 1:
        raise _bad(f'lists {len(chief)} "chief" tasks; at most one')
    if len(set(chief + workers)) < len(chief + workers):
        raise _bad("lists one address twice; each worker needs its own host:port")
    if not isinstance(task, dict) or task.get("type") not in JOBS:
        raise _bad('has no "task": {"type": "worker", "index": N} saying which worker this is')
    jobs = {"chief": chief, "worker": workers}
    index = task.get("index", 0)
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(jobs[task["type"]]):
        raise _bad(f'task index {json.dumps(index)} is not one of the {len(jobs[task["type"]])} '
                   f'"{task["type"]}" tasks (0 to {len(jobs[task["type"]]) - 1})')
    return Cluster(chief, workers, task["type"], index)


def from_env() -> Cluster:
    return parse_tf_config(os.environ.get(ENV))


def tf_config(workers: Sequence[str], index: int) -> str:
    """TF_CONFIG's text for worker ``index`` of a cluster of ``workers`` ("host:port"; no chief task,
    so worker 0 is the chief)."""
    return json.dumps({"cluster": {"worker": list(workers)}, "task": {"type": "worker", "index": index}})


def loopback_cluster(n: int) -> list[str]:
    """``n`` "127.0.0.1:port" addresses with ports free right now: a cluster of workers on this machine
    (tests, tools/multiworker_loopback.py). Another process may still take a port before a worker binds it."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))  # all bound at once: n different ports
        return [f"127.0.0.1:{s.getsockname()[1]}" for s in socks]
    finally:
        for s in socks:
            s.close()


# A separate process, because TensorFlow holds the GIL while it waits for the cluster (no Python
# thread runs) and ignores SIGTERM and Ctrl-C there. It sleeps until the pipe closes (the cluster
# formed, or this process ended) or the timeout passes; then it prints the error and kills the worker.
_WATCHDOG = """
import os, select, signal, sys
fd, pid, timeout, msg = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
if not select.select([fd], [], [], timeout)[0]:
    sys.stderr.write(msg + "\\n")
    sys.stderr.flush()
    os.kill(pid, signal.SIGKILL)
"""


@contextlib.contextmanager
def _watchdog(timeout_s: float, message: str) -> Iterator[None]:
    """Kill this process with ``Error: message`` on stderr unless the block ends within ``timeout_s``."""
    import subprocess  # noqa: PLC0415

    read, write = os.pipe()
    try:
        dog = subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(read), str(os.getpid()), str(timeout_s),
                                "Error: " + " ".join(message.split())], pass_fds=(read,), stdin=subprocess.DEVNULL)
    finally:
        os.close(read)
    try:
        yield
    finally:
        os.close(write)  # the watchdog sees the pipe close and exits
        try:
            dog.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - it only has to read one closed pipe
            dog.kill()


def connect(timeout_s: float, log: Callable[[str], None] = print):
    """MultiWorkerMirroredStrategy once every worker of TF_CONFIG has joined.

    TensorFlow waits for missing workers without end (the first worker; the others were
    still waiting after 150 s in our tries), deaf to Ctrl-C and SIGTERM: after ``timeout_s``
    a watchdog process prints one ``Error:`` line and kills this one (exit status 137).

    Returns:
        (Cluster, strategy)
    """
    cluster = from_env()
    from ._keras import tf  # noqa: PLC0415

    log(f"      worker {cluster.rank} of {cluster.num_workers} at {cluster.address}"
        f"{' (chief: writes the run folder)' if cluster.is_chief else ''}; waiting up to "
        f"{timeout_s:.0f} s for the others")
    late = (f"worker {cluster.rank} ({cluster.address}) waited {timeout_s:.0f} s for the other "
            f"{cluster.num_workers - 1} worker(s) of TF_CONFIG to join, in vain; start `celltrain fit` on every "
            f"machine of the cluster, check that their addresses and ports are reachable from each other, "
            f"or wait longer with --worker-timeout")
    with _watchdog(timeout_s, late):
        try:
            strategy = tf.distribute.MultiWorkerMirroredStrategy()  # reads TF_CONFIG
        except tf.errors.OpError as e:  # the chief never answered (TensorFlow's own deadline)
            raise UserError(f"worker {cluster.rank} could not join the cluster ({type(e).__name__}: "
                            f"{str(e).splitlines()[0]}); start the chief ({cluster.to_json()['chief']}) and "
                            "check that the addresses and ports are reachable") from None
    return cluster, strategy


def eval_batch_size(n: int, batch: int, replicas: int) -> int:
    """A batch size for evaluating ``n`` images on ``replicas`` replicas that leaves none of them an empty share.

    TensorFlow fails on an empty per-replica batch (a last batch smaller than the number of
    replicas), and evaluation cannot drop images. The size closest to ``batch`` (smaller
    first) whose last batch is full or holds at least ``replicas`` images; the batch size
    does not change the results.

    Raises:
        UserError: fewer images than replicas.
    """
    if n < replicas:
        raise UserError(f"the validation split holds {n} images, fewer than the {replicas} replicas of this "
                        "cluster; add data")
    for b in [*range(min(batch, n), replicas - 1, -1), *range(max(batch + 1, replicas), n + 1)]:
        if n % b == 0 or n % b >= replicas:
            return b
    return n  # not reached: n % n == 0


def shard_by_data(ds):
    """Each worker keeps its share of every global batch (the data are arrays, not files to split).

    Every worker still reads and augments the whole epoch and keeps 1/N of it, so the
    input pipeline costs each worker what it costs one machine; the model's steps are split.
    """
    from ._keras import tf  # noqa: PLC0415

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


@contextlib.contextmanager
def peer_errors(cluster: Cluster, out: str, fresh: bool = False) -> Iterator[None]:
    """A worker that stopped or became unreachable -> one clear line instead of TensorFlow's traceback.

    Args:
        out: the run folder (the chief's), for the message.
        fresh: ``out`` was made by this run: remove it if no epoch finished (nothing to resume).
    """
    from ._keras import tf  # noqa: PLC0415

    try:
        yield
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError,
            tf.errors.CancelledError, tf.errors.InternalError) as e:
        resumable = (Path(out) / "state.json").is_file()
        if fresh and cluster.is_chief and not resumable:
            shutil.rmtree(out, ignore_errors=True)
        first = next((line for line in str(e).splitlines() if line.strip()), "")
        first = re.sub(r"\{\{.*?\}\}\s*", "", first)  # TensorFlow's {{function_node ...}} prefix
        raise UserError(f"worker {cluster.rank} lost the cluster ({type(e).__name__}: {first[:160]}): another "
                        "worker stopped or became unreachable (its own output says why). Start every worker again"
                        + (f"; celltrain fit --resume {out} continues from the last finished epoch" if resumable
                           else "")) from None


@contextlib.contextmanager
def scratch_run(out: str, cluster: Cluster, resume: bool) -> Iterator[str]:
    """A temporary run folder for a worker that is not the chief, deleted afterwards.

    With ``resume`` it starts as a copy of ``out`` (the chief's run folder, which this
    worker must see at the same path: a shared disk, or a copy).
    """
    tmp = Path(tempfile.mkdtemp(prefix=f"scopelite-worker{cluster.rank}-"))
    run = tmp / "run"
    try:
        if resume:
            shutil.copytree(out, run, ignore=shutil.ignore_patterns("tensorboard"))
        yield str(run)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def weights_sha256(weights) -> str:
    """Hash of a model's weights: equal on every worker when training kept them in step."""
    h = hashlib.sha256()
    for w in weights:
        h.update(str(w.shape).encode())
        h.update(w.astype(w.dtype.newbyteorder("<")).tobytes())
    return h.hexdigest()


__all__ = ["Cluster", "connect", "eval_batch_size", "from_env", "parse_tf_config", "peer_errors", "scratch_run",
           "shard_by_data", "weights_sha256"]
