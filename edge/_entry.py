"""The console commands' entry points (pyproject.toml): Ctrl-C while a command's modules are still being imported
(numpy, OpenCV, TensorFlow: up to a few hundred ms) is the quiet ``Error: interrupted`` and exit 130 it is after,
not a KeyboardInterrupt traceback."""
import importlib
import os
import signal

INTERRUPTED = 130


def _while_importing(signum, frame) -> None:  # nothing is written while the modules load: nothing to finish
    os.write(2, b"Error: interrupted\n")
    os._exit(INTERRUPTED)


def run(module: str):
    """Import ``module`` with Ctrl-C a quiet exit, then call its ``main`` (click: it says and exits itself). A
    SIGHUP meanwhile (``systemctl reload`` right after the start ended the service, which systemd does not restart)
    is remembered: ``celledge watch`` reloads once it can (``shutdown.defer``), other commands go on."""
    from . import shutdown

    before, hup_before = None, None
    try:  # a command started with Ctrl-C ignored (`cmd &` in a script) keeps ignoring it
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            before = signal.signal(signal.SIGINT, _while_importing)
        if shutdown.SIGHUP is not None and signal.getsignal(shutdown.SIGHUP) is not signal.SIG_IGN:
            hup_before = signal.getsignal(shutdown.SIGHUP)
            shutdown.early(shutdown.SIGHUP)
    except ValueError:  # not the main thread (called from a test's thread): import as usual
        pass
    try:
        main = importlib.import_module(module).main
    finally:
        if before is not None:
            signal.signal(signal.SIGINT, before)
        if hup_before is not None:
            signal.signal(shutdown.SIGHUP, hup_before)
    return main()


def _terminated(signum, frame) -> None:
    raise KeyboardInterrupt  # as Ctrl-C: the command's own clean-up and words (a resume hint, no half-made folder)


def _sigterm_as_ctrl_c() -> None:
    """celltrain and cellcompress: SIGTERM (kill, timeout, systemd, a batch scheduler) ends them as Ctrl-C does. It
    killed them outright: synth left a hidden partial folder of gigabytes, fit said nothing of how to resume."""
    try:
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _terminated)
    except ValueError:  # not the main thread
        pass


def celltrain():
    _sigterm_as_ctrl_c()
    return run("scopelite.train.cli")


def cellcompress():
    _sigterm_as_ctrl_c()
    return run("scopelite.compress.cli")


def celledge():
    return run("scopelite.edge.cli")
