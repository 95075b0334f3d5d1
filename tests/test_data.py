"""Loaders and splits: every bad input is one clear message naming the file."""
import cv2
import numpy as np
import pytest

from scopelite.edge.errors import UserError
from scopelite.train import data
from scopelite.train.synth import make_crops


@pytest.fixture(scope="module")
def crops():
    return make_crops(4, size=40, seed=2)


def test_an2dl_npz(tmp_path, crops):
    x, y = crops
    p = tmp_path / "train.npz"
    np.savez(p, images=x, labels=y[:, None])
    ds = data.load(str(p), 32)
    assert ds.images.shape == (32, 32, 32, 3) and ds.labels.tolist() == y.tolist()
    assert ds.predefined_split is None and ds.ids[0] == "train.npz:0"


def test_medmnist_npz_grey_keeps_its_split(tmp_path, crops):
    x, y = crops
    grey = x.mean(-1).astype(np.uint8)
    p = tmp_path / "bloodmnist.npz"
    np.savez(p, train_images=grey[:16], train_labels=y[:16, None], val_images=grey[16:24],
             val_labels=y[16:24, None], test_images=grey[24:], test_labels=y[24:, None])
    ds = data.load(str(p), 28)
    assert ds.images.shape == (32, 28, 28, 3)
    assert {k: len(v) for k, v in ds.predefined_split.items()} == {"train": 16, "val": 8, "test": 8}
    assert ds.ids[16] == "val:0"


@pytest.mark.parametrize("make, message", [
    (lambda x, y: dict(images=x.astype(np.float32) / 255, labels=y), "must be uint8"),
    (lambda x, y: dict(images=x[:, :, :, :2], labels=y), "must be (N, H, W, 3)"),
    (lambda x, y: dict(images=x, labels=y[:-1]), "32 images but 31 labels"),
    (lambda x, y: dict(images=x, labels=y + 5), "labels must be 0..7"),
    (lambda x, y: dict(images=x[y != 3], labels=y[y != 3]), "no images of class(es) immature_granulocyte"),
    (lambda x, y: dict(pictures=x, labels=y), "expected 'images' + 'labels'"),
    (lambda x, y: dict(images=x, labels=np.array(["a"] * len(y), dtype=object)), "object arrays are refused"),
])
def test_bad_npz(tmp_path, crops, make, message):
    p = tmp_path / "bad.npz"
    np.savez(p, **make(*crops))
    import re

    with pytest.raises(UserError, match=re.escape(message)) as e:
        data.load(str(p), 32)
    assert str(p) in str(e.value)


def test_not_an_npz(tmp_path):
    p = tmp_path / "x.npz"
    p.write_bytes(b"junk")
    with pytest.raises(UserError, match="is not a .npz file"):
        data.load(str(p), 32)


def test_folders_any_format_and_bad_files(tmp_path, crops):
    x, y = crops
    from scopelite.edge.bundle import CLASS_NAMES

    for i, (img, lab) in enumerate(zip(x, y)):
        d = tmp_path / "d" / CLASS_NAMES[lab].replace("_", " ")  # "immature granulocyte" is accepted too
        d.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(d / f"{i}.{('png', 'jpg', 'bmp')[i % 3]}"), img)
    # hidden files and folders are not cells: macOS's resource forks (._x.jpg), a viewer's thumbnails
    (tmp_path / "d" / "basophil" / "._0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (tmp_path / "d" / "basophil" / ".thumbs").mkdir()
    (tmp_path / "d" / "basophil" / ".thumbs" / "0.png").write_bytes(b"nope")
    ds = data.load(str(tmp_path / "d"), 32)
    assert len(ds) == 32 and ds.class_names == CLASS_NAMES and sorted(set(ds.labels.tolist())) == list(range(8))
    from scopelite.edge.sources import list_images

    assert len(list_images([tmp_path / "d"])) == 32
    assert list_images([tmp_path / "d" / "basophil" / "._0.png"]) == [tmp_path / "d" / "basophil" / "._0.png"]
    (tmp_path / "d" / "basophil" / "broken.png").write_bytes(b"nope")
    with pytest.raises(UserError, match="broken.png"):
        data.load(str(tmp_path / "d"), 32)


def test_split_is_stratified_seeded_and_leak_free():
    labels = np.repeat(np.arange(8), 50)
    images = np.random.default_rng(0).integers(0, 255, (400, 4, 4, 3), dtype=np.uint8)
    images[7] = images[3]  # an exact duplicate
    dups = data.exact_duplicates(images)
    assert dups.tolist() == [7]
    a = data.stratified_split(labels, (0.8, 0.1, 0.1), seed=1, exclude=dups)
    b = data.stratified_split(labels, (0.8, 0.1, 0.1), seed=1, exclude=dups)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    allidx = np.concatenate(list(a.values()))
    assert len(allidx) == len(set(allidx.tolist())) == 399 and 7 not in allidx
    assert all(np.bincount(labels[a["test"]], minlength=8).tolist() == [5] * 8 for _ in [0])


def test_saved_split_round_trip(tmp_path):
    ds = data.load_synthetic(5, 24)
    split = data.stratified_split(ds.labels, seed=0)
    data.save_split(tmp_path / "split.json", ds, split, 0)
    back = data.load_split(tmp_path / "split.json", ds)
    assert all(np.array_equal(split[k], back[k]) for k in split)
    with pytest.raises(UserError, match="not in"):
        data.load_split(tmp_path / "split.json", data.load_synthetic(3, 24))


def test_another_dataset_with_the_same_file_names_is_refused_the_same_images_re_encoded_are_not(tmp_path):
    """evaluate/choose/cellcompress --data OTHER: the split maps images by name, so another lab's folders numbered
    0001.png ... were scored as if they were the run's test images, without a word. The split keeps each test
    image's mean colour; other images are refused, the same ones at another resolution (a lab's originals beside
    the crops) are not."""
    def folders(root, images, labels, names, ext, scale=1):
        for im, y, n in zip(images, labels, names):
            (root / names_of[y]).mkdir(parents=True, exist_ok=True)
            im = cv2.resize(im, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC) if scale != 1 else im
            cv2.imwrite(str(root / names_of[y] / f"{n}{ext}"), cv2.cvtColor(im, cv2.COLOR_RGB2BGR))
        return data.load_folders(root, 32)

    a, ya = make_crops(6, size=32, seed=3)
    b, _ = make_crops(6, size=32, seed=4)
    names_of = ["neutrophil", "lymphocyte", "monocyte", "eosinophil", "basophil", "erythroblast",
                "immature_granulocyte", "platelet"]
    names = [f"{i:04d}" for i in range(len(a))]
    ds = folders(tmp_path / "run_data", a, ya, names, ".png")
    split = data.stratified_split(ds.labels, seed=0)
    data.save_split(tmp_path / "split.json", ds, split, 0)
    same = folders(tmp_path / "originals", a, ya, names, ".png", scale=3)  # the same images, 96 px: accepted
    assert np.array_equal(data.load_split(tmp_path / "split.json", same)["test"], split["test"])
    swapped = np.ascontiguousarray(255 - b)  # other cells, other colours, the same names
    other = folders(tmp_path / "other_lab", swapped, ya, names, ".png")
    with pytest.raises(UserError, match="another dataset with the same file names"):
        data.load_split(tmp_path / "split.json", other)


def test_a_lab_with_only_some_classes_keeps_all_eight_outputs(tmp_path):
    """Labs label the 4-6 classes their slides show: the dataset keeps the model's 8 classes."""
    import cv2

    from scopelite.edge.bundle import CLASS_NAMES
    from scopelite.train.data import load_folders
    from scopelite.train.metrics import summarize
    from scopelite.train.synth import make_crops

    images, labels = make_crops(3, size=32, seed=0)
    for cls in ("eosinophil", "neutrophil", "lymphocyte", "monocyte"):
        (tmp_path / cls).mkdir()
        for i in np.flatnonzero(labels == CLASS_NAMES.index(cls)):
            cv2.imwrite(str(tmp_path / cls / f"{i}.png"), images[i][..., ::-1])
    ds = load_folders(tmp_path, 32)
    assert ds.class_names == CLASS_NAMES and len(ds) == 12
    assert set(np.unique(ds.labels)) == {CLASS_NAMES.index(c) for c in ("eosinophil", "neutrophil", "lymphocyte", "monocyte")}
    perfect = np.eye(8)[ds.labels]
    assert summarize(ds.labels, perfect, CLASS_NAMES)["macro_f1"] == 1.0  # absent classes are not averaged in
    for cls in ("neutrophil", "lymphocyte", "monocyte"):
        for f in (tmp_path / cls).iterdir():
            f.unlink()
        (tmp_path / cls).rmdir()
    with pytest.raises(Exception, match="one class only"):
        load_folders(tmp_path, 32)


def test_training_scale_is_measured_once_per_dataset(monkeypatch):
    """fit asks for the scale for its log line, the sidecar and debris: the crops are measured once."""
    from scopelite.train import data as data_lib

    calls = []
    monkeypatch.setattr(data_lib, "images_rbc_px", lambda images: calls.append(len(images)) or 18.0)
    ds = data_lib.load_synthetic(3, 32)
    assert data_lib.training_scale(ds) == data_lib.training_scale(ds) == (18.0, "measured on the images")
    assert calls == [len(ds)]
    tr = ds.subset([0, 1, 2])  # another set of images: measured on its own
    assert data_lib.training_scale(tr)[0] == 18.0 and calls == [len(ds), 3]


def test_whole_fields_among_crops_are_noted(tmp_path):
    """Three 640x480 fields copied among 96 px crops trained as three cells, and nothing said so."""
    from scopelite.train.synth import make_field

    x, y = make_crops(4, size=96, seed=3)
    for i, (img, lab) in enumerate(zip(x, y)):
        d = tmp_path / data.CLASS_NAMES[lab]
        d.mkdir(exist_ok=True)
        cv2.imwrite(str(d / f"c{i}.png"), img[..., ::-1])
    assert data.mixed_sizes_note(data.load_folders(tmp_path, 32)) is None
    field = make_field(np.random.default_rng(0), 640, 480)[0]
    for i in range(3):
        cv2.imwrite(str(tmp_path / "lymphocyte" / f"zfield{i}.png"), field[..., ::-1])
    note = data.mixed_sizes_note(data.load_folders(tmp_path, 32))
    assert note is not None and note.startswith("3 of 35 images are over 2.5x the usual side (96 px)")
    assert "lymphocyte/zfield0.png (640x480)" in note
    assert data.whole_fields_note(data.load_folders(tmp_path, 32)) is None  # a few among crops: the note above


def test_camera_frames_among_exported_crops_are_noted(tmp_path):
    """A walk-through copied five 640x480 fields into celledge export's folder of 256 px crops: 640 is 2.5x 256, not
    over it, and fit trained them as cells without a word. A camera frame's shape among square crops is noted."""
    from scopelite.train.synth import make_field

    x, y = make_crops(3, size=256, seed=3)
    for i, (img, lab) in enumerate(zip(x, y)):
        (tmp_path / data.CLASS_NAMES[lab]).mkdir(exist_ok=True)
        cv2.imwrite(str(tmp_path / data.CLASS_NAMES[lab] / f"c{i}.png"), img[..., ::-1])
    assert data.mixed_sizes_note(data.load_folders(tmp_path, 32)) is None
    (tmp_path / "neutrophil").mkdir(exist_ok=True)
    for i in range(5):
        field = make_field(np.random.default_rng(i), 640, 480)[0]
        cv2.imwrite(str(tmp_path / "neutrophil" / f"f{i}.jpg"), field[..., ::-1])
    note = data.mixed_sizes_note(data.load_folders(tmp_path, 32))
    assert note is not None and note.startswith("5 of 29 images are over 2.5x the usual side (256 px) or shaped like "
                                                "a camera's frame, e.g. neutrophil/f0.jpg (640x480)"), note
    assert data.whole_fields_note(data.load_folders(tmp_path, 32)) is None


def test_a_folder_of_whole_fields_is_noted(tmp_path):
    """A second-site trial: fit --data on class folders of 640x480 fields trained with no word of it (the
    mixed-sizes note needs crops to compare with). Square crops of any size, PBC's 360x363 included, are not."""
    from scopelite.train.synth import make_field

    for i, name in enumerate(["eosinophil", "eosinophil", "neutrophil", "neutrophil"]):
        (tmp_path / name).mkdir(exist_ok=True)
        cv2.imwrite(str(tmp_path / name / f"{i}.png"), make_field(np.random.default_rng(i), 640, 480)[0][..., ::-1])
    note = data.whole_fields_note(data.load_folders(tmp_path, 32))
    assert note is not None and note.startswith("4 of 4 images look like whole camera frames (640x480")
    assert "celledge export" in note
    square = tmp_path / "square"
    for i, name in enumerate(["eosinophil", "neutrophil"]):
        (square / name).mkdir(parents=True)
        cv2.imwrite(str(square / name / f"{i}.png"), make_field(np.random.default_rng(i), 360, 363)[0][..., ::-1])
    assert data.whole_fields_note(data.load_folders(square, 32)) is None


def test_names_that_are_not_utf8_are_read_or_refused_not_a_crash(tmp_path):
    """A file name made on another system (bytes that are not UTF-8): OpenCV's own reader crashed the process
    (a segmentation fault). An image of that name is read from its bytes; a class folder of that name is refused
    with its reason (its name would go into the model's sidecar and reports)."""
    import os

    root = tmp_path / "cells"
    for cls in ("neutrophil", "lymphocyte"):
        (root / cls).mkdir(parents=True)
        for i in range(2):
            cv2.imwrite(str(root / cls / f"{i}.png"), np.full((40, 40, 3), 50 + 60 * i, np.uint8))
    odd = os.fsdecode(b"caf\xe9.png")  # Latin-1 bytes: a lone surrogate in Python
    (root / "neutrophil" / "0.png").rename(root / "neutrophil" / odd)
    ds = data.load_folders(root, 32)
    assert len(ds.labels) == 4
    os.rename(root / "lymphocyte", root / os.fsdecode(b"lymph\xf6cyte"))
    with pytest.raises(UserError, match="not valid UTF-8"):
        data.load_folders(root, 32)


def test_a_video_whose_name_is_not_utf8_is_refused_not_a_crash(tmp_path):
    import os

    from scopelite.edge.sources import OpenCVSource, SourceError

    path = tmp_path / os.fsdecode(b"scan\xff.avi")
    path.write_bytes(b"RIFF")
    with pytest.raises(SourceError, match="not valid UTF-8"):
        OpenCVSource(str(path))


def test_a_class_folder_no_label_can_be_named_is_refused_before_training(tmp_path):
    """A class folder named with a backslash trained a model whose sidecar every reader then refused."""
    import cv2
    import numpy as np
    import pytest

    from scopelite.edge.errors import UserError
    from scopelite.train.data import load_folders

    for name in ("a", "b\\c"):
        (tmp_path / name).mkdir()
        cv2.imwrite(str(tmp_path / name / "x.png"), np.full((32, 32, 3), 100, np.uint8))
    with pytest.raises(UserError, match="has a name no model label can have"):
        load_folders(tmp_path, image_size=32)


def test_one_lineage_is_the_same_split_whatever_else_its_file_holds(tmp_path):
    """choose and average compare runs' splits: since the split keeps the test images' colours (measured at each
    run's image size), the file's bytes differ between sizes and machines; the lineage is its classes and images."""
    import json

    ds24, ds40 = data.load_synthetic(5, 24), data.load_synthetic(5, 40)
    split = data.stratified_split(ds24.labels, seed=0)
    data.save_split(tmp_path / "a.json", ds24, split, 0)
    data.save_split(tmp_path / "b.json", ds40, split, 0)
    old = {k: v for k, v in json.loads((tmp_path / "a.json").read_text()).items() if k != "test_colour"}
    (tmp_path / "old.json").write_text(json.dumps(old))  # a run from before session 33
    assert (tmp_path / "a.json").read_bytes() != (tmp_path / "b.json").read_bytes()
    assert len({data.split_identity(tmp_path / f) for f in ("a.json", "b.json", "old.json")}) == 1
    data.save_split(tmp_path / "c.json", ds24, data.stratified_split(ds24.labels, seed=1), 1)
    assert data.split_identity(tmp_path / "c.json") != data.split_identity(tmp_path / "a.json")


def test_a_folder_in_number_order_reads_its_numbers_as_numbers(tmp_path):
    """``numbered`` (a folder read with --track): 2.png before 10.png, in each folder; names without numbers in name
    order; without it, name order as before."""
    from scopelite.edge.sources import list_images

    for name in ("10.png", "2.png", "1.png", "tile_9_b.png", "tile_10_a.png", "a.png", "b2.png", "b10.png"):
        (tmp_path / name).write_bytes(b"")
    numbered = [p.name for p in list_images([tmp_path], numbered=True)]
    assert numbered == ["1.png", "2.png", "10.png", "a.png", "b2.png", "b10.png", "tile_9_b.png", "tile_10_a.png"]
    assert [p.name for p in list_images([tmp_path])] == sorted(numbered)
