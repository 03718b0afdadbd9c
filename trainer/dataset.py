"""Training items as token ids whose labels cover only the completion (the price and end of sequence)."""

from __future__ import annotations

import torch

from pricer.evaluator.data import PRICE_PREFIX, HeldOutSet, training_text

IGNORE = -100  # label value the loss skips


class CompletionOnly(torch.utils.data.Dataset):
    """Tokenised prompt + price items; the prompt's labels are IGNORE, as the course trains.

    An item longer than `max_length` loses the end of its description, never the
    "Price is $" that the answer follows.
    """

    def __init__(self, tokenizer, items: HeldOutSet, *, max_length: int = 182) -> None:
        tail = tokenizer("\n\n" + PRICE_PREFIX, add_special_tokens=False)["input_ids"]
        self.rows = []
        for prompt, price in zip(items.prompts, items.prices, strict=True):
            prompt_ids = tokenizer(prompt)["input_ids"]
            answer = training_text("", float(price))
            answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            room = max_length - len(answer_ids)
            if len(prompt_ids) > room:
                prompt_ids = prompt_ids[: room - len(tail)] + prompt_ids[-len(tail) :]
            self.rows.append((prompt_ids + answer_ids, [IGNORE] * len(prompt_ids) + answer_ids))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        input_ids, labels = self.rows[index]
        return {"input_ids": input_ids, "labels": labels}


def pad_batch(pad_id: int):
    """A collator that right-pads ids (with `pad_id`), the attention mask (0) and labels (IGNORE)."""

    def collate(rows: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in rows)

        def padded(key: str, fill: int) -> torch.Tensor:
            return torch.tensor([r[key] + [fill] * (width - len(r[key])) for r in rows])

        mask = torch.tensor([[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in rows])
        return {"input_ids": padded("input_ids", pad_id), "attention_mask": mask, "labels": padded("labels", IGNORE)}

    return collate
