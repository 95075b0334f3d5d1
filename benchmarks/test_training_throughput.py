"""Is the input pipeline the bottleneck? Images/s of tf.data augmentation alone vs the training step."""
import time

import numpy as np
import pytest

from scopelite.train.synth import make_crops


@pytest.fixture(scope="module")
def images():
    return make_crops(64, size=96, seed=0)  # 512 crops


# "strong+": the strong preset plus every op it leaves out (small rotations, HED jitter, RandAugment)
EXTRA = {"rotate": 0.7, "hed": 0.7, "randaugment": 0.7}


@pytest.mark.parametrize("policy", ["flips", "strong", "strong+"])
def test_input_pipeline_images_per_second(images, record, policy):
    from scopelite.train.augment import make_dataset

    x, y = images
    ds = make_dataset(x, y, 8, 32, True, policy.rstrip("+"), mixup=0.0 if policy == "flips" else 0.2,
                      ops=EXTRA if policy.endswith("+") else None).repeat()
    it = iter(ds)
    for _ in range(5):
        next(it)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 5.0:
        n += len(next(it)[0])
    rate = n / (time.perf_counter() - t0)
    record.add(f"input pipeline ({policy}) img/s", images_per_second=round(rate, 1))
    assert rate > 0


def test_training_step_images_per_second(images, record):
    from scopelite.train._keras import keras
    from scopelite.train.model import build

    x, y = images
    model = build("efficientnetv2b0", 96, 8)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss="sparse_categorical_crossentropy")
    xb, yb = x[:32].astype(np.float32), y[:32]
    model.train_on_batch(xb, yb)  # trace
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 10.0:
        model.train_on_batch(xb, yb)
        n += 32
    rate = n / (time.perf_counter() - t0)
    record.add("EfficientNetV2B0 96px train step img/s", images_per_second=round(rate, 1))
    for policy in ("strong", "strong+"):
        pipe = record.rows.get(f"input pipeline ({policy}) img/s")
        if pipe:
            ratio = pipe["images_per_second"] / rate
            record.add(f"input pipeline / train step ({policy})", ratio=round(ratio, 2))
            assert ratio > 1.0, f"the {policy} input pipeline is slower than training: it is the bottleneck"
