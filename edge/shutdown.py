"""SIGTERM/SIGINT honoured within a deadline, whatever the main thread is doing.

A Python signal handler runs only between bytecodes of the main thread, so a frame
stuck in C (a huge image, a stream that never answers) would delay it. Here the C-level
handler writes the signal to a pipe (``signal.set_wakeup_fd``); a watcher thread reads
it at once, sets ``stop`` (the loop ends after the current frame) and, if the program
is still running ``grace`` seconds later, says so and exits. Other signals (``others``: SIGHUP
asks for a model reload) run their function on the same watcher thread and stop nothing.
"""
from __future__ import annotations

import os
import select
import signal
import sys
import threading
from typing import Callable

SIGHUP = getattr(signal, "SIGHUP", None)  # None where there is none (Windows)


def defer(sig: int | None) -> Callable[[], bool]:
    """Until ``install`` takes ``sig`` over, remember it instead of letting it end the program (SIGHUP's default
    does). Call from the main thread. Returns a function: whether ``sig`` came."""
    if sig is None:
        return lambda: False
    # a list, not an Event: a handler takes no lock (a second signal runs it inside the first: Event.set deadlocked);
    # one that came while the command was still loading (``early``) counts
    came = _early.pop(sig, [])
    signal.signal(sig, lambda *_: came.append(1))
    return lambda: bool(came)


_early: dict[int, list[int]] = {}


def early(sig: int) -> None:
    """While a command loads (``_entry``): remember ``sig`` instead of letting it end the program; the command's
    ``defer`` of it (if it has one) takes it over. Call from the main thread."""
    came = _early.setdefault(sig, [])
    signal.signal(sig, lambda *_: came.append(1))


def install(stop: threading.Event, grace: float = 1.5, on_force: Callable[[], None] | None = None,
            signals=(signal.SIGINT, signal.SIGTERM),
            others: dict[int | None, Callable[[], None]] | None = None,
            busy: str = "a frame or a stream open that does not end") -> Callable[[], None]:
    """Call from the main thread: on ``signals``, set ``stop``; exit 1 if not done within ``grace`` s.

    Args:
        on_force: called just before a forced exit (e.g. flush the output file).
        others: {signal: function} for signals that do not stop the work (None keys are skipped);
            the function runs on the watcher thread, so it must return quickly.

    Returns:
        A function to call when the work is done: no forced exit after it; the previous handlers are back, but
        for ``signals`` once one of them came (the rest of a burst of Ctrl-C is ignored until the process ends).
    """
    r, w = os.pipe()
    done = threading.Event()
    came: list[int] = []  # a stopping signal came (its handler says so: the watcher may not have read it yet)
    os.set_blocking(w, False)
    others = {sig: fn for sig, fn in (others or {}).items() if sig is not None}
    old_fd = signal.set_wakeup_fd(w, warn_on_full_buffer=False)  # first: a signal between the two is not lost
    # The handlers only note the signal: the wakeup fd tells the watcher, which sets ``stop``. A handler that set
    # it took Event's lock in the main thread, and a second Ctrl-C, run inside the first handler, waited for that
    # lock for ever (a burst of signals hung the daemon; only SIGKILL ended it).
    # A signal ignored when the command started (`cmd &` in a script, a supervisor's choice) stays ignored.
    signals = [sig for sig in signals if signal.getsignal(sig) is not signal.SIG_IGN]
    previous = {sig: signal.signal(sig, lambda sig, _: came or came.append(sig)) for sig in signals}  # no lock
    previous.update({sig: signal.signal(sig, lambda *_: None) for sig in others})

    def watch() -> None:
        try:
            while True:
                if came and not done.is_set():  # noted by its handler: its byte may have been lost (a full pipe)
                    got = bytes([came[0]])
                    break
                if not select.select([r], [], [], 0.25)[0]:
                    continue
                got = os.read(r, 1)
                if not got or got[0] not in others:
                    break
                others[got[0]]()
        except (OSError, ValueError):
            got = b""
        if not got:  # uninstalled
            os.close(r)
            return
        stop.set()
        name = signal.Signals(got[0]).name if got and got[0] in signal.valid_signals() else "a signal"
        finished = done.wait(grace)
        os.close(r)  # only now: the signals after the first (a burst of Ctrl-C) had somewhere to go
        if not finished:  # the work has not ended in time
            if on_force is not None:
                try:
                    on_force()
                except Exception:  # noqa: BLE001 - exiting on time matters more
                    pass
            print(f"Error: still busy {grace:g} s after {name} ({busy}); exiting without the summary",
                  file=sys.stderr, flush=True)
            os._exit(1)

    threading.Thread(target=watch, name="shutdown", daemon=True).start()

    def uninstall() -> None:
        signal.set_wakeup_fd(old_fd)
        for sig, handler in previous.items():
            if not (came and sig in signals):  # stopping: the rest of a burst of Ctrl-C is not a traceback at exit
                signal.signal(sig, handler)
        os.close(w)
        done.set()  # last: the watcher closes its end once nothing writes to the other

    return uninstall
