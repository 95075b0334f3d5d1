"""celledge watch --config: defaults < the site file < flags given, every mistake at once, --print-config."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from conftest import invoke_cli
from scopelite.edge.config import WatchConfig
from scopelite.edge.packaged import default_model

DEPLOY = Path(__file__).resolve().parents[1] / "edge" / "deploy"


def _site(tmp_path, text: str, name: str = "site.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _printed(*args) -> dict:
    r = invoke_cli("celledge", "watch", *args, "--print-config")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    return yaml.safe_load(r.stdout)


def _errors(r) -> list[str]:
    assert r.returncode == 2 and "Traceback" not in r.stderr + r.stdout, r.stderr
    return [x for x in r.stderr.splitlines() if x.startswith("Error: ")]


def test_without_a_file_the_config_is_the_flags_defaults():
    # WatchConfig's defaults are the flags' defaults: a run from Python is a run from the shell
    assert _printed("/dev/video0") == WatchConfig(source="/dev/video0").to_file()


def test_a_flag_given_overrides_the_file_and_the_file_overrides_the_defaults(tmp_path):
    site = _site(tmp_path, "source: /dev/video2\nmode: field\ncrop-size: 360\ncount: 100\nfps: 5\n"
                           "save_classes: [basophil, erythroblast]\nsave-dir: " + str(tmp_path / "saved") + "\n"
                           "size: [640, 480]\ntta: 4\n")
    got = _printed("--config", site, "--count", "200", "--fps", "2.5")
    assert got["source"] == "/dev/video2" and got["mode"] == "field" and got["crop-size"] == 360
    assert got["count"] == 200 and got["fps"] == 2.5  # flags
    assert got["save-classes"] == ["basophil", "erythroblast"] and got["size"] == "640x480" and got["tta"] == 4
    assert got["min-score"] == 0.5 and got["top-k"] == 3 and got["http"] is None  # defaults
    # a flag given with the default's value still wins: the user typed it
    site = _site(tmp_path, "source: /dev/video2\nmode: field\n", "mode.yaml")
    assert _printed("--config", site, "--mode", "crop")["mode"] == "crop"
    assert _printed("--config", site, "/dev/video7")["source"] == "/dev/video7"


def test_print_config_reads_back_the_same_and_json_works(tmp_path):
    site = _site(tmp_path, f"source: 0\nmode: field\nmodel: {default_model()}\nwbc: 6.2\nhttp: 127.0.0.1:8080\n")
    first = invoke_cli("celledge", "watch", "--config", site, "--print-config").stdout
    assert yaml.safe_load(first)["source"] == "0"  # a camera index
    again = invoke_cli("celledge", "watch", "--config", _site(tmp_path, first, "printed.yaml"), "--print-config")
    assert again.stdout == first
    as_json = _site(tmp_path, json.dumps(yaml.safe_load(first)), "site.json")
    assert invoke_cli("celledge", "watch", "--config", as_json, "--print-config").stdout == first


MISTAKES = [  # (line of the file, what the one Error line for it says)
    ("fsp: 10", "site.yaml:2: fsp: unknown option (did you mean fps?)"),
    ("colour: blue", "site.yaml:2: colour: unknown option; celledge watch --help"),
    ("http-token: s3cret", "site.yaml:2: http-token: the token is not read from files; give --http-token or set "
                           "SCOPELITE_HTTP_TOKEN"),  # (it said "unknown option", which --help contradicts)
    ("fps: fast", "site.yaml:2: fps: expected a number, got 'fast'"),
    ("count: 2.5", "site.yaml:2: count: expected a whole number, got 2.5"),
    ("count: many", "site.yaml:2: count: expected a whole number, got 'many'"),
    ("count: '12'", "--count, --report, --wbc and --track need --mode field"),  # a number in quotes is a number
    ("count: 0", "site.yaml:2: count: 0 is not in the range x>=1"),
    ("min-score: 1.5", "site.yaml:2: min-score: 1.5 is not in the range 0<=x<=1"),
    ("loop: maybe", "site.yaml:2: loop: expected true or false, got 'maybe'"),
    ("mode: fields", "site.yaml:2: mode: 'fields' is not one of 'crop', 'field'"),
    ("tta: 3", "site.yaml:2: tta: '3' is not one of '1', '2', '4', '8'"),
    ("crop-size: big", "site.yaml:2: crop-size: 'big' is neither 'auto' nor a whole number of pixels"),
    ("size: [640]", "site.yaml:2: size: expected WIDTHxHEIGHT or [width, height], got [640]"),
    ("size: 640 by 480", "site.yaml:2: size: '640 by 480' is not WIDTHxHEIGHT"),
    ("device: tpu", "site.yaml:2: device: 'tpu' is not a device"),
    ("save-classes: [1, 2]", "site.yaml:2: save-classes: expected class names, got [1, 2]"),
    ("http: {host: x}", "site.yaml:2: http: expected a single value, got dict"),
    ("model: /nope/model.tflite", "site.yaml:2: model: Path '/nope/model.tflite' does not exist"),
    ("fps: 1\nfps: 2", "site.yaml:3: fps: given twice (also line 2)"),
    ("max-frames: 3\nmax_frames: 4", "site.yaml:3: max_frames: the same option as max-frames, given twice"),
    ("fps: [1", "site.yaml:3: not valid YAML"),
    ("count: 100", "--count, --report, --wbc and --track need --mode field"),
    ("save-dir: saved", "--save-dir needs --save-classes and/or --save-below"),
    ("report: /proc/no/report\nmode: field", "--report /proc/no/report cannot be written"),
    ("report: 2024-01-01\nmode: field", "site.yaml:2: report: expected text, got a date (2024-01-01): put the value in "
     "quotes"),  # a TypeError traceback from the path check
    ("fps: " + "9" * 400, "site.yaml:2: fps: expected a number, got one too large"),  # click's float(): OverflowError
    ("max-frames: " + "9" * 5000, "site.yaml: holds a number too long to read"),  # PyYAML's ValueError
]


@pytest.mark.parametrize("line, message", MISTAKES, ids=[m[0].split(":")[0] + str(i) for i, m in enumerate(MISTAKES)])
def test_each_mistake_is_one_clear_line(tmp_path, monkeypatch, line, message):
    monkeypatch.chdir(tmp_path)
    _site(tmp_path, "source: /dev/video0\n" + line + "\n")
    errs = _errors(invoke_cli("celledge", "watch", "--config", "site.yaml"))
    assert len(errs) == 1 and message in errs[0], errs


def test_every_mistake_at_once_in_file_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _site(tmp_path, "mode: crop\nfsp: 10\nmin-score: 2\nloop: maybe\ncount: 5\n")
    errs = _errors(invoke_cli("celledge", "watch", "--config", "site.yaml"))
    assert [e.split(": ")[1] for e in errs[:3]] == ["site.yaml:2", "site.yaml:3", "site.yaml:4"]
    assert "no SOURCE" in errs[3] and "need --mode field" in errs[4] and len(errs) == 5
    # a bad value in the file is reported even where a flag overrides it: the file runs again without the flag
    errs = _errors(invoke_cli("celledge", "watch", "/dev/video0", "--config", "site.yaml", "--min-score", "0.4"))
    assert any("min-score: 2" in e for e in errs)


@pytest.mark.parametrize("text, message", [
    ("- fps: 1\n", "must hold a mapping of option: value"),
    ("{not json", "site.json:1: not valid JSON"),
    ('{"min-score": 1' + "0" * 5000 + "}", "site.json: holds a number too long to read"),
    ('{"source": "/dev/video0", "fps": 1, "fps": 2}', "site.json: fps: given twice"),  # the last one won without a word
])
def test_a_file_that_is_not_a_mapping(tmp_path, text, message):
    name = "site.json" if "json" in message else "site.yaml"
    errs = _errors(invoke_cli("celledge", "watch", "--config", _site(tmp_path, text, name)))
    assert len(errs) == 1 and message in errs[0], errs


def test_an_endless_file_is_not_read_into_memory(tmp_path):
    """--config /dev/zero (or --site): 4 GB of memory in 6 s; a FIFO waited for ever; a huge file is not read whole."""
    errs = _errors(invoke_cli("celledge", "watch", "--config", "/dev/zero"))
    assert len(errs) == 1 and "is not a file (a pipe or a device)" in errs[0], errs
    fifo = tmp_path / "watch.yaml"
    os.mkfifo(fifo)
    errs = _errors(invoke_cli("celledge", "watch", "--config", str(fifo)))
    assert len(errs) == 1 and "is not a file (a pipe or a device)" in errs[0], errs
    big = tmp_path / "big.yaml"
    big.write_text("# a comment\n" * 100_000)  # 1.2 MB
    errs = _errors(invoke_cli("celledge", "watch", "--config", str(big)))
    assert len(errs) == 1 and "larger than a settings file can be" in errs[0], errs


def test_the_shipped_site_file_is_valid_and_the_unit_uses_it(tmp_path):
    text = (DEPLOY / "site.yaml").read_text()
    assert "/opt/scopelite/models/model.tflite" in text and "/var/lib/scopelite" in text
    text = text.replace("/opt/scopelite/models/model.tflite", str(default_model()))
    text = text.replace("/var/lib/scopelite", str(tmp_path))
    got = _printed("--config", _site(tmp_path, text))
    assert got["source"] == "/dev/video0" and got["mode"] == "field" and got["http"] == "127.0.0.1:8080"
    unit = (DEPLOY / "scopelite-edge.service").read_text()
    assert "celledge watch --config /etc/scopelite/site.yaml" in unit and "ExecReload=/bin/kill -HUP $MAINPID" in unit


def test_yaml_1_1_numbers_are_read_as_a_person_writes_them(tmp_path):
    """epochs: 010 was 8 (octal), 0x20 was 32, 1_000 was 1000, 1:30 was 90, without a word: now they are the text
    written, which an option reads as YAML 1.2 and a person do (010 is 10) or refuses (0x20)."""
    from scopelite.edge.config import read_file

    f = tmp_path / "c.yaml"
    f.write_text("a: 010\nb: 0x20\nc: 0b101\nd: 1_000\ne: 1:30\nf: -010\ng: 0.5\nh: 10\ni: 0\nj: -3\nk: 1.5e3\n")
    raw = read_file(f)[0]
    assert raw == {"a": "010", "b": "0x20", "c": "0b101", "d": "1_000", "e": "1:30", "f": "-010", "g": 0.5, "h": 10,
                   "i": 0, "j": -3, "k": "1.5e3"}  # 1.5e3: text to PyYAML, read by --lr as 1500
