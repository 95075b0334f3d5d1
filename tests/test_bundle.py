import json

import pytest

from scopelite.edge.bundle import (CLASS_NAMES, BundleError, InputSpec, Provenance, Quantization, TensorSpec,
                                   atomic_path, build_sidecar, load_sidecar, sidecar_path, write_sidecar)


def _sidecar(model_file, **kw):
    base = dict(format="tflite", labels=CLASS_NAMES,
                input=InputSpec(96, 96, dtype="uint8", quantization=Quantization(1.0, 0)),
                output=TensorSpec("uint8", Quantization(1 / 256, 0)), runtimes=("cpu",), provenance=Provenance())
    base.update(kw)
    return build_sidecar(model_file, **base)


@pytest.fixture
def model_file(tmp_path):
    p = tmp_path / "model.tflite"
    p.write_bytes(b"not really a model")
    return p


def test_round_trip(model_file):
    sc = _sidecar(model_file, metrics={"split": "test", "int8": {"accuracy": 0.9}})
    path = write_sidecar(model_file, sc)
    assert path == sidecar_path(model_file) == model_file.with_suffix(".json")
    back = load_sidecar(model_file)
    assert back == sc
    raw = json.loads(path.read_text())
    assert raw["schema"] == "scopelite.bundle" and raw["schema_version"] == 2
    assert raw["input"]["value_range"] == [0, 255] and raw["input"]["normalization"] == "in-graph"
    assert raw["provenance"]["created"]  # the builder stamps it


def test_hash_mismatch_is_refused(model_file):
    write_sidecar(model_file, _sidecar(model_file))
    model_file.write_bytes(b"changed")
    with pytest.raises(BundleError, match="sha256 differs"):
        load_sidecar(model_file)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("labels"), "missing field 'labels'"),
    (lambda d: d.update(schema_version=99), "schema version 99"),
    (lambda d: d.update(schema="other"), "not a scopelite sidecar"),
    (lambda d: d.update(labels=["a", "a"]), "distinct"),
    # each label becomes a folder's name (celledge export): "../../x" wrote outside --out
    (lambda d: d.update(labels=["a", "../../evil"]), "not a plain name"),
    (lambda d: d.update(labels=["a", ".hidden"]), "not a plain name"),
    (lambda d: d.update(labels=["a", "b\\c"]), "not a plain name"),
    (lambda d: d.update(labels=["a", "line\nbreak"]), "not a plain name"),
    (lambda d: d.update(labels=["a", " "]), "not a plain name"),
    (lambda d: d.update(labels=["a", "right\u202eleft"]), "not a plain name"),
    (lambda d: d.update(labels=["a", "\u00e9" * 200]), "not a plain name"),  # 400 bytes: no folder is named so
    (lambda d: d.update(labels=["a", "line\u2028separator"]), "not a plain name"),
    (lambda d: d["input"].update(channels=1), "3 channels"),
    (lambda d: d["input"].update(quantization=None), "no quantization"),
    (lambda d: d.update(runtimes=["gpu"]), "runtimes"),
    (lambda d: d["input"].update(height="96"), "must be int"),
])
def test_invalid_sidecars_are_refused(model_file, mutate, message):
    write_sidecar(model_file, _sidecar(model_file))
    p = sidecar_path(model_file)
    d = json.loads(p.read_text())
    mutate(d)
    p.write_text(json.dumps(d))
    with pytest.raises(BundleError, match=message):
        load_sidecar(model_file)


def test_missing_and_broken_sidecar(model_file):
    with pytest.raises(BundleError, match="no sidecar"):
        load_sidecar(model_file)
    sidecar_path(model_file).write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_sidecar(model_file)


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    final = tmp_path / "model.keras"
    final.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(final) as tmp:
            assert tmp.suffix == ".keras" and tmp.parent == tmp_path
            tmp.write_text("half written")
            raise RuntimeError("crash mid-write")
    assert final.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]
    with atomic_path(final) as tmp:
        tmp.write_text("new")
    assert final.read_text() == "new"


def test_atomic_files_are_readable_by_others(tmp_path):
    import stat

    from scopelite.edge.bundle import write_bytes_atomic

    p = tmp_path / "m.tflite"
    write_bytes_atomic(p, b"x")
    assert stat.S_IMODE(p.stat().st_mode) == 0o644


@pytest.mark.parametrize("mode, synced", [("file", ["file"]), ("full", ["file", "folder"]), ("none", [])])
def test_write_bytes_atomic_fsync_modes(tmp_path, monkeypatch, mode, synced):
    import os
    import stat

    from scopelite.edge.bundle import write_bytes_atomic

    calls = []
    real = os.fsync

    def spy(fd):
        calls.append("folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    write_bytes_atomic(tmp_path / "a.bin", b"abc", fsync=mode)
    assert calls == synced and (tmp_path / "a.bin").read_bytes() == b"abc"
    with pytest.raises(ValueError):
        write_bytes_atomic(tmp_path / "b.bin", b"abc", fsync="always")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_build_and_write_validate_the_provenance_once_and_hash_the_model_once(model_file, monkeypatch):
    from scopelite.edge import bundle

    hashed, validated = [], []
    real_hash, real_from_dict = bundle.sha256_file, Provenance.from_dict.__func__

    def counting_hash(path):
        hashed.append(str(path))
        return real_hash(path)

    def counting_from_dict(cls, d, where="provenance"):
        validated.append(where)
        return real_from_dict(cls, d, where)

    monkeypatch.setattr(bundle, "sha256_file", counting_hash)
    monkeypatch.setattr(Provenance, "from_dict", classmethod(counting_from_dict))
    sc = _sidecar(model_file, provenance=Provenance(notes={"how": "measured on /mnt/scratch/crops"}))
    assert validated == ["provenance"] and sc.provenance.notes == {"how": "measured on crops"}
    write_sidecar(model_file, sc)
    assert hashed == [str(model_file)]  # build_sidecar's hash, not read again by write_sidecar
    # a file changed after its sidecar was built is still refused (its hash is read again then)
    sc = _sidecar(model_file)
    model_file.write_bytes(b"another model, longer")
    with pytest.raises(BundleError, match="sidecar hash does not match"):
        write_sidecar(model_file, sc)
    # a bad provenance is still one line naming the field
    with pytest.raises(BundleError, match=r"sidecar of model.tflite: provenance: .*cpu_model"):
        _sidecar(model_file, provenance=Provenance(cpu_model=5))


def test_labels_of_any_script_are_plain_names():
    from scopelite.edge.bundle import is_label

    for name in ("neutrófilo", "نیم\u200cفاصله", "क्\u200dष", "Blast (myeloid)", "band neutrophil"):
        assert is_label(name), name
