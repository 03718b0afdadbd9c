"""Scoring at the machine's limit: the FLOP rate of pricer's forward passes beside a plain matmul's, in one run.

The model is `eval_common`'s tiny Llama (4 layers x 256 hidden) with a real rank-8 LoRA
checkpoint on q/k/v/o/gate/up/down, pricing real catalogue items in pricer's length-sorted
batches. Three timings over the same batches:

- merged: `PriceModel.price(..., merged=True)`, the adapter merged into a copy of its layers;
- unmerged: PEFT's LoRA layers (the base matmul plus the rank-r A and B matmuls per layer);
- matmul: the decoder's linear layers alone, as bare `torch.nn.functional.linear` calls on
  inputs of each batch's padded shape: what this CPU does on the same work with nothing around it.

The FLOPs counted are the linear layers' (2 x weights x padded tokens, plus the last
position's logits); attention's and the norms' are left out of every figure, so the ratio
to the matmul says how much of the machine the forward pass leaves unused. Attention,
norms and activations grow with the hidden size, matmuls with its square: `--hidden N`
times an untrained base of that width (4 layers, random weights) with a random rank-8
adapter on the same layers, to show how the ratio moves toward an 8B model's shapes.

    python -m bench.flop_rate
    python -m bench.flop_rate --hidden 1024
    python -m bench.flop_rate --items 300 --threads 2 --repeats 3
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench.eval_common import WORK, base_and_run, checkpoints, items
from pricer.evaluator.checkpoints.adapters import read_adapter
from pricer.evaluator.embedded.tiny import make_tiny_base
from pricer.evaluator.scoring import CPU_BATCH_SIZE, PriceModel, batch_order


def random_adapter(hidden: int, out: Path) -> tuple[Path, Path]:
    """An untrained base `hidden` wide and a random rank-8 LoRA adapter on it (built once, then cached)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from pricer.trainer.config import preset

    wide = make_tiny_base(out / f"tiny-llama-4x{hidden}-untrained", hidden=hidden, layers=4, pretrain_steps=0)
    adapter = out / f"random-adapter-4x{hidden}"
    if not (adapter / "adapter_model.safetensors").is_file():
        tiny = preset("tiny")
        config = LoraConfig(r=tiny.lora_r, lora_alpha=tiny.lora_alpha, target_modules=list(tiny.target_modules),
                            init_lora_weights=False)  # B not zero: the adapter changes every output
        get_peft_model(AutoModelForCausalLM.from_pretrained(wide), config).save_pretrained(adapter)
    return wide, adapter


def decoder_linears(model: torch.nn.Module) -> list[torch.Tensor]:
    """The weights of every linear layer in the decoder stack (not the embedding or the output head)."""
    return [m.weight for name, m in model.named_modules() if type(m) is torch.nn.Linear and ".layers." in name]


def best_of(repeats: int, work) -> float:
    """The fastest of `repeats` timings of `work()` (the others are what a shared machine added)."""
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        seconds.append(time.perf_counter() - started)
    return min(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=CPU_BATCH_SIZE)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timings of each; the fastest is reported")
    parser.add_argument("--hidden", type=int, default=None, help="an untrained base this wide, with a random adapter")
    parser.add_argument("--work", type=Path, default=WORK)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.hidden:
        base, folder = random_adapter(args.hidden, args.work)
        revision = folder.name
    else:
        base, run = base_and_run(args.work)
        (revision,) = checkpoints(run, 1)
        folder = run / revision
    dataset = items(args.items)
    model = PriceModel(str(base), device="cpu")
    name = model.load_adapter(read_adapter(folder), "bench")
    lengths = [len(ids) for ids in model.tokenizer(dataset.prompts)["input_ids"]]
    batches = batch_order(lengths, args.batch_size)
    shapes = [(len(rows), max(lengths[i] for i in rows)) for rows in batches]
    padded = sum(rows * longest for rows, longest in shapes)

    with model.lock, model.using(name, merged=True) as merged_model:
        weights = decoder_linears(merged_model)
        head = merged_model.get_output_embeddings().weight
    flops = 2 * sum(w.numel() for w in weights) * padded + 2 * head.numel() * len(dataset)
    print(f"model: {base.name}, adapter {revision}, {len(dataset)} items in {len(batches)} batches of {args.batch_size}, "
          f"{padded} padded tokens ({sum(lengths)} real), {args.threads} threads")
    print(f"linear FLOPs per pass over the items: {flops / 1e9:.1f} GFLOP")

    def price(merged: bool) -> None:
        model.price(dataset.prompts, adapter=name, batch_size=args.batch_size, merged=merged, key=dataset.fingerprint)

    widths = {w.shape[1] for w in weights} | {head.shape[1]}
    inputs = {width: [torch.randn(rows * longest, width) for rows, longest in shapes] for width in widths}

    @torch.inference_mode()
    def matmuls() -> None:
        for b, (rows, _) in enumerate(shapes):
            for w in weights:
                F.linear(inputs[w.shape[1]][b], w)
            F.linear(inputs[head.shape[1]][b][:rows], head)  # the last position's logits

    price(True), price(False), matmuls()  # warm-up (and tokenising, kept under the data's fingerprint)
    results = {"merged": best_of(args.repeats, lambda: price(True)), "unmerged": best_of(args.repeats, lambda: price(False)),
               "matmul": best_of(args.repeats, matmuls)}
    rates = {key: flops / seconds / 1e9 for key, seconds in results.items()}
    for key, seconds in results.items():
        print(f"{key:>9}: {seconds:6.2f} s, {rates[key]:6.1f} GFLOP/s, {len(dataset) / seconds:7.1f} items/s")
    print(f"merged / matmul FLOP rate: {rates['merged'] / rates['matmul']:.0%}; "
          f"unmerged / matmul: {rates['unmerged'] / rates['matmul']:.0%}; merged is {results['unmerged'] / results['merged']:.2f}x "
          "the unmerged speed")
    check = model.price(dataset.prompts[:64], adapter=name, merged=True), model.price(dataset.prompts[:64], adapter=name)
    print(f"merged vs unmerged on 64 items: argmax equal on {np.mean(check[0].argmax == check[1].argmax):.0%}, "
          f"largest mean difference {np.abs(check[0].mean - check[1].mean).max():.2e}")


if __name__ == "__main__":
    main()
