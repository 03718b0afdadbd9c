"""Training settings as one typed dataclass, and the named presets `pricer train --preset` offers."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Literal

from pricer.evaluator.errors import InvalidTrainingConfig

QLORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True)
class TrainConfig:
    """How to fine-tune a causal LM into a pricer with LoRA (QLoRA on CUDA)."""

    epochs: float = field(default=1.0, metadata={"help": "passes over the training items (ignored when max_steps > 0)"})
    max_steps: int = field(default=-1, metadata={"help": "stop after this many optimizer steps; -1: run `epochs`"})
    save_steps: int = field(default=50, metadata={"help": "write a checkpoint (a revision) every N steps"})
    batch_size: int = field(default=16, metadata={"help": "items per optimizer step"})
    learning_rate: float = field(default=1e-4, metadata={"help": "peak learning rate"})
    scheduler: str = field(default="cosine", metadata={"help": "transformers lr_scheduler_type"})
    warmup_ratio: float = field(default=0.03, metadata={"help": "share of the steps spent warming up"})
    weight_decay: float = field(default=0.001, metadata={"help": "AdamW weight decay"})
    max_grad_norm: float = field(default=0.3, metadata={"help": "gradient clipping"})
    optimizer: str = field(default="paged_adamw_32bit", metadata={"help": "transformers optim name on CUDA (CPU: adamw_torch)"})
    lora_r: int = field(default=32, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=64, metadata={"help": "LoRA alpha"})
    lora_dropout: float = field(default=0.1, metadata={"help": "LoRA dropout"})
    target_modules: tuple[str, ...] = field(default=QLORA_TARGETS, metadata={"help": "modules that get adapters"})
    max_length: int = field(default=182, metadata={"help": "tokens per item; longer descriptions are cut"})
    quantization: Literal["auto", "nf4", "none"] = field(
        default="auto", metadata={"help": "nf4: 4-bit QLoRA (CUDA); auto: nf4 on CUDA, plain weights elsewhere"}
    )
    logging_steps: int = field(default=10, metadata={"help": "log the loss every N steps"})
    seed: int = field(default=42, metadata={"help": "seed for initialisation and shuffling"})

    def __post_init__(self) -> None:
        positive = ("save_steps", "batch_size", "learning_rate", "lora_r", "lora_alpha", "max_length", "logging_steps")
        for name in positive:
            if getattr(self, name) <= 0:
                raise InvalidTrainingConfig(f"{name} must be positive, not {getattr(self, name)}")
        if self.max_steps <= 0 and self.epochs <= 0:
            raise InvalidTrainingConfig("give a positive number of epochs or max_steps")
        if not 0 <= self.warmup_ratio < 1 or not 0 <= self.lora_dropout < 1:
            raise InvalidTrainingConfig("warmup_ratio and lora_dropout must lie in [0, 1)")
        if self.quantization not in ("auto", "nf4", "none"):
            raise InvalidTrainingConfig(f"quantization must be auto, nf4 or none, not {self.quantization!r}")
        object.__setattr__(self, "target_modules", tuple(self.target_modules))

    def with_(self, **changes: object) -> TrainConfig:
        """A copy with the given fields changed (None values are ignored, so CLI flags pass through)."""
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise InvalidTrainingConfig(f"unknown training settings: {', '.join(sorted(unknown))}")
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, TrainConfig] = {
    # the course's QLoRA run of Llama 3.1 8B
    "course-qlora": TrainConfig(),
    # the tiny local Llama on 2 CPU cores, in minutes
    "tiny": TrainConfig(
        save_steps=25,
        batch_size=8,
        learning_rate=3e-3,
        scheduler="cosine",
        warmup_ratio=0.05,
        weight_decay=0.0,
        max_grad_norm=1.0,
        lora_r=8,
        lora_alpha=16,
        lora_dropout=0.0,
        target_modules=(*QLORA_TARGETS, "gate_proj", "up_proj", "down_proj"),
        max_length=256,
        quantization="none",
        logging_steps=25,
        seed=0,
    ),
}


def preset(name: str, **changes: object) -> TrainConfig:
    """A named preset, with changes."""
    if name not in PRESETS:
        raise InvalidTrainingConfig(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name].with_(**changes)
