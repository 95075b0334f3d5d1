"""A run's train and val images in one .npz, for training on a machine that holds no data.

``celltrain pack`` writes it here; ``celltrain fit --backend keras3 --data PACK.npz`` reads it
on a GPU machine. The file bytes go in unchanged (no re-encoding), the test images never do,
and there are no pickles in it. No TensorFlow here.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from scopelite.edge.bundle import atomic_path
from scopelite.edge.errors import UserError


def pack(data: str, split_file: str, out: str, splits=("train", "val")) -> dict:
    """The JPEG/PNG bytes of the named splits' images of ``split_file`` (a run's split.json) in ``out``.

    Returns:
        Images per split and the bytes packed.
    """
    from .data import SPLITS, _canonical, read_json_file  # noqa: PLC0415 - data pulls in the image loaders

    saved = read_json_file(split_file, "the split", lambda o: isinstance(o, dict) and "class_names" in o)
    names = saved["class_names"]
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)) or not all(
            isinstance(saved.get(s, []), list) and all(isinstance(r, str) for r in saved.get(s, [])) for s in splits):
        raise UserError(f"{split_file} is damaged: its class_names and {' and '.join(splits)} must be lists of "
                        "names (write it again: celltrain fit --out a new folder, same --data and --seed)")
    if not saved.get(splits[0]):  # a keras3 fit on it learned from nothing
        raise UserError(f"{split_file} names no {splits[0]} images")
    seen: dict[str, str] = {}
    for s in SPLITS:  # an image in two splits (a test image in train) would break the promise that none leaves here
        lst = saved.get(s, [])
        for rel in lst if isinstance(lst, list) else []:
            if isinstance(rel, str) and seen.setdefault(rel, s) != s:
                raise UserError(f"{split_file} is damaged: {rel} is in its {seen[rel]} and {s} splits")
    root = Path(data)
    blobs, labels, ids, which = [], [], [], []
    for s in splits:
        for rel in saved.get(s, []):
            if Path(rel).is_absolute() or ".." in Path(rel).parts:  # "basophil/../../../etc/hostname" was packed
                raise UserError(f"{split_file} is damaged: {rel} (its {s} split) is not inside {data}")
            p = root / rel  # a class folder that is a link to another disk is fine: fit reads it too
            if not p.is_file():
                raise UserError(f"{p} (in {split_file}'s {s} split) does not exist; give the --data the run was "
                                "trained on")
            cls = _canonical(rel.split("/")[0])  # fit reads the folder Basophil as the class basophil
            if cls not in names:
                raise UserError(f"{rel}: folder {rel.split('/')[0]!r} is not one of the split's classes {names}")
            blob = np.frombuffer(p.read_bytes(), np.uint8)
            if _decode(blob) is None:  # else packed, exit 0, and refused only by unpack on the GPU machine
                raise UserError(f"cannot use {p} (in {split_file}'s {s} split): it cannot be decoded as an image (not "
                                "an image, or corrupt): remove it or replace it with a valid image")
            blobs.append(blob)
            labels.append(names.index(cls))
            ids.append(rel)
            which.append(s)
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as f:  # a file object: np.savez would add .npz to a temporary name
            np.savez(f, blob=np.concatenate(blobs), offsets=offsets, labels=np.array(labels, np.int64),
                     ids=np.array(ids), split=np.array(which), class_names=np.array(names))
    return {s: which.count(s) for s in splits} | {"bytes": int(offsets[-1])}


def _decode(blob: np.ndarray):
    """One packed image's bytes decoded to BGR as ``unpack`` does, or None where they cannot be (``pack`` and
    ``unpack`` use this one decoder, so a pack holds only what its reader can decode)."""
    import cv2  # noqa: PLC0415

    try:
        return cv2.imdecode(blob, cv2.IMREAD_COLOR) if blob.size else None
    except cv2.error:  # larger than OpenCV's pixel limit
        return None


PACK_KEYS = {"blob", "offsets", "labels", "ids", "split", "class_names"}


def is_pack(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a pack (the arrays ``pack`` writes), read without trusting it."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return set(z.files) == PACK_KEYS
    except Exception:  # noqa: BLE001 - anything np.load refuses is not a pack
        return False


def unpack(path: str, image_size: int):
    """The packed images decoded to RGB at ``image_size`` (area-resized when they differ).

    Returns:
        images (n, size, size, 3) uint8, labels, ids, split names per image, class names.
    """
    import cv2  # noqa: PLC0415

    try:
        with np.load(path, allow_pickle=False) as z:
            blob, offsets, labels = z["blob"], z["offsets"], z["labels"]
            ids, split, names = z["ids"].tolist(), z["split"], z["class_names"].tolist()
    except (OSError, ValueError, KeyError):
        raise UserError(f"{path} is not a pack (make one with celltrain pack DATA SPLIT OUT.npz)") from None
    images = np.empty((len(labels), image_size, image_size, 3), np.uint8)
    for i in range(len(labels)):
        img = _decode(blob[offsets[i]:offsets[i + 1]])
        if img is None:
            raise UserError(f"{path}: image {ids[i]} cannot be decoded; pack it again")
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        if img.shape[:2] != (image_size, image_size):
            img = cv2.resize(img, (image_size, image_size), interpolation=cv2.INTER_AREA)
        images[i] = img
    return images, labels, ids, split, names
