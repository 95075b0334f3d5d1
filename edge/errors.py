"""Errors that are the user's to fix: the CLIs print them as one line, no traceback.

``OneLineGroup`` is the click group of all three CLIs: click's usage errors, ours
(``UserError``) and the file system's (``OSError``: read-only, disk full) all end as
one ``Error: ...`` line on stderr, on a line of its own, with the exit code.
"""
from __future__ import annotations

import errno
import functools
import os
import sys

import click


class UserError(Exception):
    """Bad input, a missing file, a mismatched model: say what and how to fix it."""

    exit_code = 2


class Number(click.FloatRange):
    """``click.FloatRange`` that refuses ``nan`` and ``inf`` (Python's float() takes both, and range checks pass
    nan: ``--wbc nan`` put NaN into a differential's JSON). The flags' type for every float of the three CLIs."""

    name = "number"

    def convert(self, value, param, ctx):
        v = super().convert(value, param, ctx)
        if v != v or v in (float("inf"), float("-inf")):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return v


def is_number_text(text: str) -> bool:
    """Whether ``float()`` reads ``text`` (a settings file's value, a history.csv cell)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


# the most characters a settings file (--config, --site) is read to: /dev/zero given as one filled the memory
SETTINGS_MAX_CHARS = 2**20


def read_settings_text(path: str | os.PathLike, flag: str, kind: str, hint: str = "") -> str:
    """The text of a settings file (``--config``, ``--site``): a regular file (a FIFO waited for a writer for ever),
    UTF-8 (Notepad's byte-order mark dropped: it is not JSON), at most ``SETTINGS_MAX_CHARS`` (/dev/zero filled the
    memory). ``kind`` names what it should be ("settings file"), ``hint`` how to make one.

    Raises:
        UserError: one line naming ``flag`` and the file.
    """
    name = str(path)
    if os.path.exists(path) and not os.path.isfile(path):
        raise UserError(f"{flag} {name} is not a file (a pipe or a device){hint}")
    try:
        with open(path, encoding="utf-8-sig") as f:
            text = f.read(SETTINGS_MAX_CHARS + 1)
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{flag} {name} cannot be read ({getattr(e, 'strerror', None) or e})") from None
    if len(text) > SETTINGS_MAX_CHARS:
        raise UserError(f"{flag} {name} is larger than a {kind} can be ({SETTINGS_MAX_CHARS // 2**20} MB){hint}")
    return text

# every --seed of the three CLIs: numpy and Keras take 0..2**32-1, and a run adds offsets (an epoch's, a soup
# member's 100 i) to its training seed; a negative or larger one was a numpy traceback after the run folder was made
SEED = click.IntRange(0, 2**31 - 1)


class NonEmptyPath(click.Path):
    """``click.Path`` that refuses an empty path: ``--out ""`` or ``"$CAM"`` unset read or wrote the current
    folder, and ``celltrain fit --data ""`` trained on generated smears, each with exit 0. The path type of every
    option and argument of the three CLIs."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            self.fail("is empty (an unset variable?): give a path, or leave the option out", param, ctx)
        if isinstance(value, str) and "\x00" in value:  # from a JSON settings file: os.stat's ValueError traceback
            self.fail(f"{value!r} holds a NUL character, which no path can", param, ctx)
        return super().convert(value, param, ctx)


def describe_os_error(e: OSError) -> str:
    """``[Errno 30] Read-only file system: 'x'`` -> ``cannot write x: read-only file system; ...``."""
    name = str(e.filename) if e.filename else ""
    where = f" {name[:60]}...{name[-40:]}" if len(name) > 120 else f" {name}" if name else ""  # 300 a's said nothing
    why = e.strerror.lower() if e.strerror else str(e) or type(e).__name__  # our own words keep their paths' case
    hint = {errno.ENOSPC: "free some space or choose another output",
            errno.EDQUOT: "free some space or choose another output",
            errno.EROFS: "choose an output on a writable disk",
            errno.EACCES: "check the permissions or choose another path",
            errno.EPERM: "check the permissions or choose another path",
            errno.ENAMETOOLONG: "a name in that path is longer than the file system allows (255 bytes); give a "
                                "shorter one"}.get(e.errno)
    return f"file system error{' at' + where if where else ''}: {why}" + (f"; {hint}" if hint else "")


def _end_progress_line() -> None:
    """Close progress bars, so the error starts on a line of its own."""
    tqdm = sys.modules.get("tqdm")
    bars = list(getattr(getattr(tqdm, "tqdm", None), "_instances", []) or []) if tqdm else []
    for bar in bars:
        try:
            bar.close()
        except Exception:  # noqa: BLE001 - a bar that cannot close must not hide the error
            pass
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
    if bars:
        sys.stderr.write("\n")
    elif sys.stderr.isatty():
        sys.stderr.write("\r\033[K")  # a Keras progress bar may have left the cursor mid-line


def print_error(msg: object) -> None:
    """One ``Error: ...`` line on stderr (whitespace folded), on a line of its own; an error with
    ``lines`` (several mistakes found at once, ``config.ConfigError``) gives one such line each."""
    _end_progress_line()
    for line in getattr(msg, "lines", None) or [msg]:
        print("Error: " + " ".join(str(line).split()), file=sys.stderr, flush=True)


def warn(msg: object) -> None:
    """A warning in our words, where the work can go on."""
    print("warning: " + " ".join(str(msg).split()), file=sys.stderr, flush=True)


def one_line_errors(fn):
    """Decorator for click commands: UserError -> ``Error: ...`` on stderr, its exit code (2);
    OSError (read-only, disk full) -> ``Error: ...``, exit 1."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            print_error(e)
            sys.exit(e.exit_code)
        except BrokenPipeError:  # `celledge ... | head`: the reader went away; nothing to say
            _quiet_stdout()
            sys.exit(1)
        except OSError as e:
            print_error(describe_os_error(e))
            sys.exit(os_error_code(e))
    return wrapper


def os_error_code(e: OSError) -> int:
    """The exit code of an OSError that ended a command: 2 for a name longer than the file system allows (a path
    given wrong, as "does not exist" is), 1 for the rest (a disk full or read-only: the machine, not the input)."""
    return 2 if e.errno == errno.ENAMETOOLONG else 1


def _quiet_stdout() -> None:
    try:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - the interpreter's final flush goes here
    except OSError:
        pass


_NO_ARGS = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2: a group run with no arguments


class OneLineGroup(click.Group):
    """A click group whose errors are one line: ``Error: Invalid value for '-k': 0 is not in the range x>=1``.

    Click's own form (usage, a hint, a blank line, then the error) is four lines; the usage is
    one ``--help`` away.
    """

    def parse_args(self, ctx, args):
        # --verbose is the tool's (``celledge --verbose watch ...``); after the subcommand it means the same
        if any(p.name == "verbose" for p in self.params) and "--verbose" in args:
            end = args.index("--") if "--" in args else len(args)
            if "--verbose" in args[1:end]:
                args = ["--verbose"] + [a for i, a in enumerate(args) if not (a == "--verbose" and i < end)]
        return super().parse_args(ctx, args)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _NO_ARGS as e:  # the tool alone: its help, as click prints it (not squeezed into an Error line)
            click.echo(e.ctx.get_help() if e.ctx is not None else e.format_message(), err=True)
            sys.exit(e.exit_code)
        except click.ClickException as e:
            print_error(e.format_message())
            sys.exit(e.exit_code)
        except click.Abort as e:
            eof = isinstance(e.__cause__ or e.__context__, EOFError)
            print_error("unexpected end of input" if eof else "interrupted")
            sys.exit(1 if eof else 130)
        except UserError as e:  # a command without @one_line_errors
            print_error(e)
            sys.exit(e.exit_code)
        except BrokenPipeError:
            _quiet_stdout()
            sys.exit(1)
        except OSError as e:
            print_error(describe_os_error(e))
            sys.exit(os_error_code(e))
        sys.exit(rv if isinstance(rv, int) and not isinstance(rv, bool) else 0)
