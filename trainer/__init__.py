"""pricer's training worker: LoRA / QLoRA fine-tuning that writes every checkpoint as a revision."""

from pricer.trainer.callback import PricerCallback
from pricer.trainer.config import PRESETS, TrainConfig, preset
from pricer.trainer.train import TrainResult, train

__all__ = ["PRESETS", "PricerCallback", "TrainConfig", "TrainResult", "preset", "train"]
