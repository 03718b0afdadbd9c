"""One-pass pricing against the course's loop, on the same adapter, items and machine.

The course priced each item on its own: `generate` a few tokens greedily, parse the
number. pricer reads the next-token distribution over the number tokens after "Price is $"
for a whole batch in one forward pass. This prints items/s of both, their ratio, and how
often the one-pass argmax equals the greedy decoder's number.

    python bench/one_pass_vs_generate.py --items 200
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pricer.evaluator.checkpoints.adapters import read_adapter
from pricer.evaluator.data import catalogue_split, heldout_from_frame, load_heldout
from pricer.evaluator.embedded.tiny import make_tiny_base
from pricer.evaluator.scoring import PriceModel, parse_price
from pricer.trainer import preset, train


def course_loop(model: PriceModel, adapter: str, prompts: list[str]) -> np.ndarray:
    """The course's tester: one item at a time, greedy generation of 3 tokens, parse the first number."""
    tokenizer, prices = model.tokenizer, []
    with torch.inference_mode(), model.lock, model.using(adapter) as active:
        for prompt in prompts:
            inputs = tokenizer(prompt, return_tensors="pt").to(model.device)
            out = active.generate(**inputs, max_new_tokens=3, do_sample=False, pad_token_id=tokenizer.pad_token_id)
            prices.append(parse_price(tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)))
    return np.array(prices)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "pricer-bench")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))

    base = make_tiny_base(args.work / "tiny-llama")
    run = args.work / "run"
    if not (run / "checkpoint-200").is_dir():
        train(base, heldout_from_frame(catalogue_split()[0], name="train"), run, preset("tiny", max_steps=200, save_steps=200))
    prompts = load_heldout().prompts[: args.items]
    model = PriceModel(str(base), device="cpu")
    adapter = model.load_adapter(read_adapter(run / "checkpoint-200"), "bench")

    model.price(prompts[:8], adapter=adapter)  # warm-up
    started = time.perf_counter()
    one_pass = model.price(prompts, adapter=adapter, batch_size=args.batch_size)
    one_pass_s = time.perf_counter() - started
    started = time.perf_counter()
    greedy = course_loop(model, adapter, prompts)
    loop_s = time.perf_counter() - started

    agree = float(np.mean(one_pass.argmax == greedy))
    print(f"items: {len(prompts)}, model: {base.name}, device: {model.device}")
    print(f"course loop (generate per item): {len(prompts) / loop_s:8.1f} items/s")
    print(f"one-pass batched pricing:        {len(prompts) / one_pass_s:8.1f} items/s")
    print(f"speed-up: {loop_s / one_pass_s:.1f}x; argmax equals greedy on {agree:.1%} of items")


if __name__ == "__main__":
    main()
