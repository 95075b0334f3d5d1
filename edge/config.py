"""``celledge watch``'s settings: one frozen ``WatchConfig``, from defaults < a site file < flags.

A site file (``--config site.yaml``, YAML or JSON) holds the watch options by their flags'
names (``crop-size: 360``; ``crop_size`` works too). Each value is checked by the flag's own
click type and callback, so a file and a flag obey one rule; a flag given on the command line
wins over the file. Every mistake is reported at once, one ``Error:`` line each, with the
file's line number: unknown keys (with the nearest known one), wrong types, values out of
range, missing files, options that contradict each other.

The other layers read the config object only; nothing below the CLI sees click.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
from dataclasses import dataclass, fields
from typing import Any

from .errors import UserError, is_number_text, read_settings_text

# watch options that steer the command itself and are no part of a run's settings
CLI_ONLY = ("config", "print_config", "http_token")  # the token: a secret, never in a file or a report


@dataclass(frozen=True)
class WatchConfig:
    """One ``celledge watch`` run. Field names are the flags' names (``crop_size`` is ``--crop-size``).

    The defaults are the flags' defaults (``test_config.py`` holds them equal).
    """

    source: str | None = None  # /dev/videoN, a camera index, a video file, a stream URL or a folder
    model: str | None = None  # None: the packaged model
    mode: str = "crop"  # crop | field
    crop_size: int | None = None  # field mode, frame px; None: auto (from the red cells)
    site: str | None = None  # a site calibration file (celledge calibrate): fixed scale, white balance
    min_score: float = 0.5
    count: int | None = None  # field mode: white cells to count, then stop
    report: str | None = None  # field mode: folder for differential.json/.csv/.txt
    wbc: float | None = None  # field mode: the analyser's white count, 10^9/L
    sessions: str | None = None  # field mode: folder of sessions (one per slide: cells, crops, report)
    new_session: bool = False  # close a session left open by the last run instead of resuming it
    add_to_session: bool = False  # count a folder or video the open session has not counted from into it
    keep_days: float | None = None  # remove closed sessions stopped more than this many days ago (retention)
    track: bool | None = None  # None: on for cameras, streams and videos; off for a folder
    max_frames: int | None = None
    fps: float | None = None
    size: tuple[int, int] | None = None  # ask the camera for (width, height)
    loop: bool = False
    exit_on_eof: bool = False
    backoff_cap: float = 30.0
    http: str | None = None  # HOST:PORT
    out: str | None = None  # JSON lines file (None: stdout)
    save_dir: str | None = None
    save_classes: tuple[str, ...] = ()
    save_below: float | None = None
    save_cap_mb: float = 500.0
    top_k: int = 3
    threads: int | None = None
    device: str | None = None
    fallback: str | None = None
    tta: int | None = None  # views averaged per cell; None: as the model's sidecar advises (``Sidecar.views``)
    rescale: bool = True  # crop mode: reframe views framed unlike the training crops (crop_scale.StreamFraming)

    def replace(self, **changes: Any) -> "WatchConfig":
        return dataclasses.replace(self, **changes)

    def to_file(self) -> dict[str, Any]:
        """The config as a site file holds it: flag names, plain values (``--print-config``)."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "size" and v is not None:
                v = f"{v[0]}x{v[1]}"
            elif f.name == "crop_size" and v is None:
                v = "auto"
            elif isinstance(v, tuple):
                v = list(v)
            out[f.name.replace("_", "-")] = v
        return out

    def dump(self) -> str:
        """YAML (JSON where PyYAML is missing: JSON is YAML too) that ``--config`` reads back."""
        head = "# celledge watch: defaults < --config file < flags (celledge watch --print-config)\n"
        try:
            import yaml  # noqa: PLC0415
        except ImportError:
            return json.dumps(self.to_file(), indent=2) + "\n"
        return head + yaml.safe_dump(self.to_file(), sort_keys=False, default_flow_style=None)

    def problems(self) -> list[str]:
        """Options that contradict each other (each a line), before anything is opened."""
        from .sources import MAX_SIDE  # noqa: PLC0415

        out = []
        if self.source is None:
            out.append("no SOURCE: give it on the command line or as 'source:' in --config")
        # the path options' type (errors.NonEmptyPath) refuses an empty one, on the command line and in the file;
        # these three are plain strings
        for name in ("source", "http", "device"):
            value = getattr(self, name)
            if isinstance(value, str) and not value.strip():  # "$CAM" unset: the current folder, or the option lost
                flag = "SOURCE" if name == "source" else f"--{name.replace('_', '-')}"
                out.append(f"{flag} is empty (an unset variable?): give a value, or leave it out (a setting of "
                           "--config's file is switched off in the file)")
        if self.sessions and self.count is not None:
            from .session import MAX_CELLS  # noqa: PLC0415

            if self.count > MAX_CELLS:
                out.append(f"--count {self.count} is more than a session holds ({MAX_CELLS} cells): give at most "
                           f"{MAX_CELLS}, or count without --sessions")
        if self.loop and self.mode == "field" and (self.count or self.report):
            out.append("--loop replays the same cells, so a differential (--count/--report) would count them "
                       "again on every pass; leave out --loop")
        if self.crop_size is not None and self.crop_size > MAX_SIDE:
            out.append(f"--crop-size {self.crop_size} is larger than any frame scopelite takes ({MAX_SIDE} px a "
                       "side); give the cell's size in the frame's pixels, e.g. --crop-size 360")
        if self.mode != "field" and (self.count or self.report or self.wbc or self.track is not None):
            out.append("--count, --report, --wbc and --track need --mode field (crop mode counts frames, not cells)")
        if self.sessions and self.mode != "field":
            out.append("--sessions needs --mode field (a session keeps counted cells)")
        if self.sessions and self.loop:
            out.append("--loop replays the same cells: a session would count them again on every pass; leave out --loop")
        if self.new_session and not self.sessions:
            out.append("--new-session needs --sessions DIR")
        if self.add_to_session and not self.sessions:
            out.append("--add-to-session needs --sessions DIR")
        if self.keep_days is not None and not self.sessions:
            out.append("--keep-days needs --sessions DIR (it removes old sessions there)")
        if self.add_to_session and self.new_session:
            out.append("--add-to-session adds to the open session, --new-session closes it: give one of them")
        if self.save_dir and not self.save_classes and self.save_below is None:
            out.append("--save-dir needs --save-classes and/or --save-below")
        if not self.save_dir and (self.save_classes or self.save_below is not None):
            given = [f for f, v in (("--save-classes", self.save_classes), ("--save-below", self.save_below is not None))
                     if v]
            out.append(f"{' and '.join(given)} need{'s' if len(given) == 1 else ''} --save-dir DIR (where the frames "
                       "go)")
        if self.mode == "field" and not self.rescale:
            out.append("--no-rescale is for crop mode: field mode cuts every cell at the model's scale from the "
                       "frame's red cells (--crop-size PX fixes the square instead)")
        if self.mode != "field" and self.crop_size is not None:
            out.append("--crop-size needs --mode field (crop mode classifies the centre square of each frame)")
        return out


class ConfigError(UserError):
    """Several mistakes at once: each is printed as its own ``Error:`` line (``errors.print_error``)."""

    def __init__(self, lines: list[str]):
        self.lines = list(lines)
        super().__init__("; ".join(self.lines))


def key_of(name: str) -> str:
    """``crop-size`` / ``crop_size`` / ``--crop-size`` -> ``crop_size``."""
    return str(name).lstrip("-").replace("-", "_")


def read_file(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, int], list[tuple[int, str]]]:
    """A site file's mapping, each key's line number (YAML) and the mistakes found reading it (line, text).

    Raises:
        ConfigError: the file cannot be read or is not a mapping of option: value.
    """
    name = str(path)
    try:
        text = read_settings_text(path, "--config", "settings file", " of option: value lines")
    except UserError as e:
        raise ConfigError([str(e)]) from None
    if name.lower().endswith(".json"):
        twice: list[str] = []

        def pairs(items):  # a key given twice: the last one won without a word (YAML's are named)
            d = {}
            for k, v in items:
                if k in d:
                    twice.append(k)
                d[k] = v
            return d

        try:
            raw = json.loads(text, object_pairs_hook=pairs) if text.strip() else {}
        except json.JSONDecodeError as e:
            raise ConfigError([f"{name}:{e.lineno}: not valid JSON ({e.msg})"]) from None
        except ValueError:  # a number of more than 4300 digits
            raise ConfigError([f"{name}: holds a number too long to read (more than 4300 digits)"]) from None
        except RecursionError:
            raise ConfigError([f"{name}: nested too deeply to be a settings file (option: value lines)"]) from None
        lines: dict[str, int] = {}
        mistakes: list[tuple[int, str]] = [(0, f"{name}: {k}: given twice") for k in twice]
    else:
        raw, lines, mistakes = _read_yaml(name, text)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([f"{name}: must hold a mapping of option: value (e.g. 'mode: field'), "
                           f"not a {type(raw).__name__}"])
    return raw, lines, mistakes


_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"


def _yaml11_number(value: str) -> bool:
    """A number only YAML 1.1 reads so: base 60 (``1:30`` = 90), a leading 0 as octal (``010`` = 8), ``0x``/``0b``
    (``0x20`` = 32), ``_`` between digits."""
    v = value.strip().lstrip("+-")
    return ":" in v or "_" in v or (len(v) > 1 and v[0] == "0" and v[1] not in ".eE")


def _loader(yaml):
    """PyYAML's SafeLoader without YAML 1.1's odd numbers (``_yaml11_number``): ``count: 1:00`` is the text '1:00'
    (named as not a whole number), not 60; ``epochs: 010`` is the text '010', read by the option as 10 (YAML 1.2's
    reading, a person's), not 8. Every other value reads as SafeLoader reads it."""
    class Loader(yaml.SafeLoader):
        def resolve(self, kind, value, implicit):
            tag = super().resolve(kind, value, implicit)
            return "tag:yaml.org,2002:str" if tag in (_INT, _FLOAT) and _yaml11_number(str(value)) else tag

    return Loader


def _read_yaml(name: str, text: str) -> tuple[Any, dict[str, int], list[tuple[int, str]]]:
    try:
        import yaml  # noqa: PLC0415
    except ImportError:
        raise ConfigError([f"reading {name} needs PyYAML (pip install pyyaml, part of scopelite[edge]); "
                           "or write it as JSON (a .json file)"]) from None
    try:
        loader = _loader(yaml)
        node = yaml.compose(text, Loader=loader)
        raw = yaml.load(text, Loader=loader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{name}:{mark.line + 1}" if mark is not None else name
        why = " ".join(filter(None, (getattr(e, "context", None), getattr(e, "problem", None)))) \
            or str(e).splitlines()[0]  # "expected a single document in the stream but found another document"
        raise ConfigError([f"{where}: not valid YAML ({why})"]) from None
    except RecursionError:
        raise ConfigError([f"{name}: nested too deeply to be a settings file (option: value lines)"]) from None
    except ValueError as e:  # PyYAML's int() of a number of more than 4300 digits (or its float() of '._')
        if "digits" in str(e):
            raise ConfigError([f"{name}: holds a number too long to read (more than 4300 digits)"]) from None
        raise ConfigError([f"{name}: not valid YAML ({e})"]) from None
    lines: dict[str, int] = {}
    mistakes = []
    if isinstance(node, yaml.MappingNode):
        for k, _ in node.value:
            key = str(k.value)
            if key in lines:
                mistakes.append((k.start_mark.line + 1,
                                 f"{name}:{k.start_mark.line + 1}: {key}: given twice (also line {lines[key]})"))
            else:
                lines[key] = k.start_mark.line + 1
    return raw, lines, mistakes


def _plain(key: str, value: Any, kind: str) -> tuple[Any, str | None]:
    """A file value in the form the flag's type takes, or why it cannot be. ``kind``: int, float, bool, str."""
    if key == "save_classes" and isinstance(value, (list, tuple)):
        if not all(isinstance(v, str) for v in value):
            return None, f"expected class names, got {value!r}"
        return ",".join(value), None
    if key == "size" and isinstance(value, (list, tuple)):
        if len(value) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return None, f"expected WIDTHxHEIGHT or [width, height], got {value!r}"
        return f"{value[0]}x{value[1]}", None
    if key == "source" and isinstance(value, int) and not isinstance(value, bool):
        return str(value), None  # a camera index
    if isinstance(value, (dict, list, tuple)):
        return None, f"expected a single value, got {type(value).__name__} {value!r}"
    if not isinstance(value, (str, int, float, bool)) and value is not None:  # report: 2024-01-01, a YAML date
        return None, f"expected text, got a {type(value).__name__} ({value}): put the value in quotes"
    if kind == "float" and isinstance(value, int) and not isinstance(value, bool) and abs(value) > 1e308:
        return None, "expected a number, got one too large for any option"  # click's float() overflowed
    if kind == "int" and (isinstance(value, bool) or isinstance(value, float) and not value.is_integer()
                          or isinstance(value, str) and not re.fullmatch(r"\s*[-+]?\d+\s*", value)):
        return None, f"expected a whole number, got {value!r}"
    if kind == "float" and isinstance(value, str) and not is_number_text(value):
        return None, f"expected a number, got {value!r}"
    if kind == "bool" and not isinstance(value, bool):
        return None, f"expected true or false, got {value!r}"
    if kind == "float" and isinstance(value, bool):
        return None, f"expected a number, got {value!r}"
    if kind == "str" and isinstance(value, bool):
        return None, f"expected text, got {value!r}"
    if kind == "str" and isinstance(value, (int, float)):
        return str(value), None  # crop-size: 360, device: 0
    if kind == "choice":
        return str(value), None  # tta: 4 reads as the flag's '4'
    return value, None


def _kind(param) -> str:
    import click  # noqa: PLC0415

    t = param.type
    if isinstance(t, click.Choice):
        return "choice"
    if isinstance(t, (click.types.IntParamType,)):
        return "int"
    if isinstance(t, (click.types.FloatParamType,)):
        return "float"
    if isinstance(t, click.types.BoolParamType) or getattr(param, "is_flag", False):
        return "bool"
    return "str"


def from_click(ctx, file_param: str = "config", checks=lambda cfg: []) -> WatchConfig:
    """The run's config from a click context: the command's defaults < ``--config`` < flags given.

    A flag counts as given when the user typed it (click's parameter source), so a file's
    ``mode: field`` holds unless ``--mode`` is on the command line (the file's value is still
    checked: the file is used again without the flag). ``checks(cfg)``: more mistakes to report
    with the file's (outputs that cannot be written).

    Raises:
        ConfigError: every mistake in the file and every contradiction, one line each.
    """
    import click  # noqa: PLC0415
    from click.core import ParameterSource  # noqa: PLC0415

    params = {p.name: p for p in ctx.command.params if p.name not in CLI_ONLY}
    names = {f.name for f in fields(WatchConfig)}
    assert set(params) <= names, f"watch options without a WatchConfig field: {sorted(set(params) - names)}"
    values = {k: v for k, v in ctx.params.items() if k in names}
    given = {k for k in values if ctx.get_parameter_source(k) not in (ParameterSource.DEFAULT,
                                                                      ParameterSource.DEFAULT_MAP, None)}
    found: list[tuple[int, str]] = []  # (line, mistake)
    path = ctx.params.get(file_param)
    if path:
        raw, lines, found = read_file(path)
        if isinstance(raw, dict) and str(raw.get("schema", "")).startswith("scopelite-site"):
            raise ConfigError([f"{path} is a site file (made by celledge calibrate): give it as --site {path} "
                               f"(or 'site: {path}' in a --config file); --config takes watch's options (YAML or "
                               "JSON: mode, count, ...)"])
        seen: dict[str, str] = {}
        for key, value in raw.items():
            line = lines.get(str(key), 0)
            where = f"{path}:{lines[str(key)]}" if str(key) in lines else str(path)
            k = key_of(key)
            if k in seen:  # crop-size and crop_size: the last one won without a word
                found.append((line, f"{where}: {key}: the same option as {seen[k]}, given twice"))
                continue
            seen[k] = str(key)
            if k == "http_token":  # a secret: never in a file that is copied, printed or reported
                found.append((line, f"{where}: {key}: the token is not read from files; give --http-token or set "
                                    "SCOPELITE_HTTP_TOKEN (under systemd: Environment=SCOPELITE_HTTP_TOKEN=... in a "
                                    "drop-in, systemctl edit scopelite-edge)"))
                continue
            if k not in params:
                near = difflib.get_close_matches(k, sorted(params), n=1, cutoff=0.6)
                hint = f" (did you mean {near[0].replace('_', '-')}?)" if near else ""
                found.append((line, f"{where}: {key}: unknown option{hint}; celledge watch --help lists them"))
                continue
            if value is None:  # null: the default
                continue
            param = params[k]
            value, why = _plain(k, value, _kind(param))
            if why is None:
                try:
                    value = param.process_value(ctx, value)
                except click.BadParameter as e:
                    why = e.message
            if why is not None:
                found.append((line, f"{where}: {key}: {why}"))
            elif k not in given:  # a flag given wins
                values[k] = value
    cfg = WatchConfig(**values)
    # contradictions are judged on what could be read: a bad value keeps its default here
    mistakes = [m for _, m in sorted(found, key=lambda t: t[0])] + cfg.problems() + checks(cfg)
    if mistakes:
        raise ConfigError(mistakes)
    return cfg
