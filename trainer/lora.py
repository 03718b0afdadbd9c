"""A small LoRA fine-tune with the transformers `Trainer`, writing `checkpoint-N/` folders.

Loss is on the completion only (the price and end of sequence), as the course trains.
This is the seed of the training worker: enough to make real checkpoint sweeps for the
tests and the embedded default.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

from evaluator.data import HeldOutSet

IGNORE = -100  # label value the loss skips


@dataclass(frozen=True)
class LoraRun:
    """Settings of a small LoRA run (defaults suit the tiny model on 2 CPU cores)."""

    max_steps: int = 60
    save_steps: int = 20
    batch_size: int = 8
    learning_rate: float = 3e-3
    rank: int = 8
    alpha: int = 16
    seed: int = 0


class CompletionOnly(torch.utils.data.Dataset):
    """Tokenised prompt + price items whose labels mask the prompt."""

    def __init__(self, tokenizer, items: HeldOutSet) -> None:
        self.rows = []
        for prompt, price in zip(items.prompts, items.prices, strict=True):
            prompt_ids = tokenizer(prompt)["input_ids"]
            answer_ids = tokenizer(f"{round(float(price))}.00", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            self.rows.append((prompt_ids + answer_ids, [IGNORE] * len(prompt_ids) + answer_ids))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        input_ids, labels = self.rows[index]
        return {"input_ids": input_ids, "labels": labels}


def pad_batch(pad_id: int):
    def collate(rows: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in rows)

        def padded(key: str, fill: int) -> torch.Tensor:
            return torch.tensor([r[key] + [fill] * (width - len(r[key])) for r in rows])

        ids = padded("input_ids", pad_id)
        mask = torch.tensor([[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in rows])
        return {"input_ids": ids, "attention_mask": mask, "labels": padded("labels", IGNORE)}

    return collate


def train_lora(base: str | Path, items: HeldOutSet, output_dir: str | Path, run: LoraRun = LoraRun()) -> Path:
    """Fine-tune a LoRA adapter on `items`, saving `checkpoint-N/` every `run.save_steps` steps."""
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    lora = LoraConfig(
        r=run.rank,
        lora_alpha=run.alpha,
        lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        task_type="CAUSAL_LM",
    )
    args = TrainingArguments(
        output_dir=str(output_dir),
        max_steps=run.max_steps,
        save_steps=run.save_steps,
        per_device_train_batch_size=run.batch_size,
        learning_rate=run.learning_rate,
        lr_scheduler_type="constant",
        logging_steps=max(1, run.save_steps // 2),
        save_only_model=True,  # adapters only: no pickled optimizer state next to them
        report_to=[],
        use_cpu=not torch.cuda.is_available(),
        seed=run.seed,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=get_peft_model(model, lora),
        args=args,
        train_dataset=CompletionOnly(tokenizer, items),
        data_collator=pad_batch(tokenizer.pad_token_id),
    )
    trainer.train()
    return Path(output_dir)
