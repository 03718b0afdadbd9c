"""pricer's training worker: LoRA / QLoRA fine-tuning that writes every checkpoint as a revision."""

from trainer.callback import PricerCallback
from trainer.config import PRESETS, TrainConfig, preset
from trainer.train import TrainResult, train

__all__ = ["PRESETS", "PricerCallback", "TrainConfig", "TrainResult", "preset", "train"]
