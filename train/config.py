"""The resolved configuration of a training run (saved beside its outputs)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class FitConfig:
    out: str
    data: str | None = None  # None: generated synthetic smears
    arch: str = "efficientnetv2b0"
    weights: str = "none"
    image_size: int = 96
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.05
    dropout: float = 0.2
    class_weights: bool = True
    augment: str = "flips"  # "none" | "flips" | "strong"
    seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    synthetic_per_class: int = 300

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "FitConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
