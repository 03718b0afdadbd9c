"""pricer's training worker: LoRA / QLoRA fine-tuning that writes every checkpoint as a revision.

Names are imported on first use, so that a training script's `PricerCallback` does not bring in the
trainer's own heavy parts (pandas, the evaluator) with it.
"""

from __future__ import annotations

import sys
from importlib import import_module
from types import ModuleType
from typing import TYPE_CHECKING

_PUBLIC = {
    "PricerCallback": "pricer.trainer.callback",
    "PRESETS": "pricer.trainer.config",
    "TrainConfig": "pricer.trainer.config",
    "preset": "pricer.trainer.config",
    "TrainResult": "pricer.trainer.train",
    "train": "pricer.trainer.train",
}
__all__ = ["PRESETS", "PricerCallback", "TrainConfig", "TrainResult", "preset", "train"]

if TYPE_CHECKING:
    from pricer.trainer.callback import PricerCallback
    from pricer.trainer.config import PRESETS, TrainConfig, preset
    from pricer.trainer.train import TrainResult, train


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'pricer.trainer' has no attribute {name!r}")
    value = globals()[name] = getattr(import_module(_PUBLIC[name]), name)
    return value


class _Package(ModuleType):
    """`train` names both a submodule and the function in it: importing the submodule must not make
    `pricer.trainer.train` the module, or `from pricer.trainer import train` would give the module."""

    def __setattr__(self, name: str, value: object) -> None:
        if not (name in _PUBLIC and isinstance(value, ModuleType)):
            super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
