"""The tools speak in their own words: TensorFlow's and LiteRT's start-up noise stays out unless --verbose."""
from __future__ import annotations

import os
import re
import shutil

import cv2
import numpy as np
import pytest

from conftest import default_signals, run_cli
from scopelite.edge import _quiet

NOISE = re.compile(r"XNNPACK|oneDNN|cuda|absl::|cpu_feature_guard|fully_quantize", re.IGNORECASE)


def _noise(stderr: str) -> list[str]:
    """Library lines in ``stderr``; ours start with ``warning:`` or ``Error:`` (a GPU TF cannot use is said so)."""
    return [x for x in stderr.splitlines() if NOISE.search(x) and not x.startswith(("warning: ", "Error: "))]


def _env(**extra: str) -> dict[str, str]:
    """The user's environment: none of the quieting that conftest or the caller may have set."""
    env = {k: v for k, v in os.environ.items() if k not in (_quiet.ENV, "TF_CPP_MIN_LOG_LEVEL")}
    return {**env, **extra}


@pytest.fixture()
def cell_png(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "cell.png"
    cv2.imwrite(str(path), rng.integers(0, 256, (96, 96, 3), dtype=np.uint8))
    return path


def test_celledge_classify_says_only_its_own_words(cell_png):
    r = run_cli("celledge", "classify", str(cell_png), env=_env())
    assert r.returncode == 0, r.stderr[-1500:]
    assert r.stdout.startswith(str(cell_png))
    assert _noise(r.stderr) == [], r.stderr


def test_verbose_shows_the_runtime_lines_again(cell_png):
    r = run_cli("celledge", "--verbose", "classify", str(cell_png), env=_env())
    assert r.returncode == 0, r.stderr[-1500:]
    assert "XNNPACK" in r.stderr  # LiteRT's own line, held back by default


def test_verbose_after_the_subcommand_means_the_same(cell_png, tmp_path):
    """``celledge classify X --verbose``: the tool's flag, not "No such option '--verbose'. Did you mean ...?"."""
    r = run_cli("celledge", "classify", str(cell_png), "--verbose", env=_env())
    assert r.returncode == 0, r.stderr[-1500:]
    assert "XNNPACK" in r.stderr and r.stdout.startswith(str(cell_png))
    r = run_cli("cellcompress", str(tmp_path / "missing.keras"), "--int8", "--verbose", "--out", str(tmp_path / "o"),
                env=_env())
    assert r.returncode == 2 and "No such option" not in r.stderr and "missing.keras" in r.stderr


def test_a_tensorflow_command_is_quiet_too(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run["dir"], run)
    r = run_cli("celltrain", "evaluate", str(run), env=_env())
    assert r.returncode == 0, r.stderr[-1500:]
    assert _noise(r.stderr) == [], r.stderr


def test_cellcompress_verbose_still_defaults_to_convert(tmp_path):
    r = run_cli("cellcompress", "--verbose", str(tmp_path / "missing.keras"), "--int8", "--out", str(tmp_path / "o"),
                env=_env())
    assert r.returncode == 2 and "No such command" not in r.stderr and "missing.keras" in r.stderr


def test_native_noise_is_held_back_and_the_rest_passes_in_order(capfd, monkeypatch):
    monkeypatch.delenv(_quiet.ENV, raising=False)
    with _quiet.native_stderr():
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
        os.write(2, b"ERROR: something real\n")
    os.write(2, b"after\n")
    err = capfd.readouterr().err
    assert "XNNPACK" not in err
    assert err.index("ERROR: something real") < err.index("after")


def test_fd2_is_restored_and_the_output_kept_when_the_block_raises(capfd, monkeypatch):
    monkeypatch.delenv(_quiet.ENV, raising=False)
    with pytest.raises(RuntimeError):
        with _quiet.native_stderr():
            os.write(2, b"what went wrong\n")
            raise RuntimeError("boom")
    os.write(2, b"after\n")
    err = capfd.readouterr().err
    assert "what went wrong" in err and "after" in err


def test_verbose_holds_nothing_back(capfd, monkeypatch):
    monkeypatch.setenv(_quiet.ENV, "1")
    with _quiet.native_stderr():
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
    assert "XNNPACK" in capfd.readouterr().err


def test_blocks_in_two_threads_share_one_redirect_and_the_last_restores_fd2(capfd, monkeypatch):
    """A camera reopened (capture thread) while a model reloads (another thread): the blocks overlap, A in, B in,
    A out, B out. fd 2 must point where it did before, and the real lines of both reach the user."""
    import threading

    monkeypatch.delenv(_quiet.ENV, raising=False)
    before = os.fstat(2).st_ino
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

    def a():
        with _quiet.native_stderr():
            os.write(2, b"from A\n")
            a_in.set()
            b_in.wait(5)
        a_out.set()

    def b():
        a_in.wait(5)
        with _quiet.native_stderr():
            b_in.set()
            a_out.wait(5)
            os.write(2, b"from B\n")

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert os.fstat(2).st_ino == before
    os.write(2, b"after\n")
    err = capfd.readouterr().err
    assert "from A" in err and "from B" in err and "after" in err


def _signalled_while_importing(tmp_path, sig: int, seconds: float, main_body: str):
    """A console command (``_entry.run``) whose CLI module takes ``seconds`` to import, sent ``sig`` meanwhile:
    (exit code, stdout, stderr)."""
    import subprocess
    import sys
    import time

    (tmp_path / "slow_cli.py").write_text(f"import time\nprint('importing', flush=True)\ntime.sleep({seconds})\n"
                                          f"def main():\n{main_body}")
    code = f"import sys; sys.path.insert(0, {str(tmp_path)!r}); from scopelite.edge._entry import run; run('slow_cli')"
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=default_signals)
    assert p.stdout.readline().strip() == "importing"
    time.sleep(0.2)
    p.send_signal(sig)
    out, err = p.communicate(timeout=20)
    return p.returncode, out, err


def test_ctrl_c_while_a_command_is_still_importing_is_a_quiet_exit(tmp_path):
    """Ctrl-C in a command's first ~150 ms (numpy, OpenCV, the CLI loading) gave a KeyboardInterrupt traceback."""
    import signal

    code, _, err = _signalled_while_importing(tmp_path, signal.SIGINT, 30, "    return 0\n")
    assert code == 130 and err == "Error: interrupted\n", err[-1000:]


def test_the_console_commands_import_light_and_go_through_the_quiet_entry():
    import subprocess
    import sys
    from importlib.metadata import entry_points

    scripts = {e.name: e.value for e in entry_points(group="console_scripts") if e.name.startswith("cell")}
    assert scripts == {n: f"scopelite.edge._entry:{n}" for n in ("celltrain", "cellcompress", "celledge")}
    r = subprocess.run([sys.executable, "-c", "import sys, scopelite.edge._entry as e; "
                        "print(sorted({'numpy', 'cv2', 'click', 'tensorflow'} & set(sys.modules)))"],
                       capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]"  # the package imports nothing heavy: the quiet handler is in place at once


def test_ctrl_c_while_the_interpreter_loads_is_an_interruption_not_a_missing_package(monkeypatch):
    """Ctrl-C while ai_edge_litert's compiled module loaded came out as ImportError("initialization failed") over
    the KeyboardInterrupt, and the command said "no LiteRT interpreter installed"."""
    import builtins

    import pytest

    from scopelite.edge import runtime

    real = builtins.__import__

    def interrupted(name, *a, **k):
        if name in ("ai_edge_litert", "tflite_runtime"):
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt:
                raise ImportError("initialization failed")  # noqa: B904 - as the compiled module's loader does
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", interrupted)
    with pytest.raises(KeyboardInterrupt):
        runtime._interpreter_module()

    def missing(name, *a, **k):
        if name in ("ai_edge_litert", "tflite_runtime"):
            raise ImportError(f"No module named {name!r}")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", missing)
    with pytest.raises(runtime.RuntimeUnavailable, match="no LiteRT interpreter installed"):
        runtime._interpreter_module()
    try:  # looked for while an earlier Ctrl-C is handled: the package is still missing, not interrupted
        raise KeyboardInterrupt
    except KeyboardInterrupt:
        with pytest.raises(runtime.RuntimeUnavailable):
            runtime._interpreter_module()


def test_a_sighup_while_a_command_loads_is_remembered_not_the_end(tmp_path):
    """`systemctl reload` right after the start: a SIGHUP before watch's handler was in ended the service (and
    systemd does not restart a unit a SIGHUP ended). It is remembered for the command's own handler now."""
    import signal

    code, out, err = _signalled_while_importing(
        tmp_path, signal.SIGHUP, 1.0, "    from scopelite.edge import shutdown\n"
        "    print('came', shutdown.defer(shutdown.SIGHUP)())\n    print('again', shutdown.defer(shutdown.SIGHUP)())\n")
    assert code == 0 and out.split() == ["came", "True", "again", "False"], (code, out, err[-1000:])
