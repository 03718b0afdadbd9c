"""QLoRA training throughput and memory with the course preset, on an 8B-shaped Llama with random weights.

No download: the model is made from a Llama 3.1 8B-shaped config with random weights,
saved once, and fine-tuned by pricer's own `train()` with the `course-qlora` preset
(4-bit nf4 with double quant, bf16 compute, r=32 on q/k/v/o, paged AdamW, batch 16,
182-token items) for a few steps on catalogue items. Prints steps/s, items/s and the
peak GPU memory. `--shape tiny --quantization none` checks the plumbing on a CPU.

    python bench/train_gpu.py --steps 10
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, TrainerCallback

from pricer.evaluator.data import catalogue_split, heldout_from_frame
from pricer.evaluator.embedded.tiny import build_tokenizer, default_corpus
from pricer.trainer import preset, train

SHAPES = {
    # Llama 3.1 8B: 8.0 B parameters
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8),
    "tiny": dict(hidden_size=128, intermediate_size=344, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),
}


class StepClock(TrainerCallback):
    """Times optimizer steps after the first (which pays for warm-up and allocation)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.times.append(time.perf_counter())


def make_random_model(folder: Path, shape: str, *, then=None) -> Path:
    """A Llama of `shape` with random bf16 weights saved in `folder` (once); `then(model)` runs before it is freed."""
    if (folder / "config.json").is_file():
        return folder
    tokenizer = build_tokenizer(default_corpus())
    config = LlamaConfig(
        vocab_size=128256 if shape == "8b" else len(tokenizer),
        max_position_embeddings=2048,
        rope_theta=500000.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **SHAPES[shape],
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    print(f"random {shape} Llama: {sum(p.numel() for p in model.parameters()) / 1e9:.2f} B parameters")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    if then is not None:
        then(model)
    del model
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=SHAPES, default="8b")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--quantization", choices=("auto", "nf4", "none"), default="auto")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "pricer-train-bench")
    args = parser.parse_args()

    started = time.perf_counter()
    base = make_random_model(args.work / f"random-{args.shape}", args.shape)
    print(f"model ready in {time.perf_counter() - started:.0f} s")
    config = preset("course-qlora", max_steps=args.steps, save_steps=args.steps, quantization=args.quantization)
    items = heldout_from_frame(catalogue_split()[0].iloc[: config.batch_size * args.steps], name="catalogue-train")
    clock = StepClock()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    output = args.work / f"run-{time.strftime('%Y%m%d-%H%M%S')}"
    train(base, items, output, config, callbacks=[clock])

    timed = clock.times[1:]
    steps_per_s = (len(timed) - 1) / (timed[-1] - timed[0]) if len(timed) > 1 else float("nan")
    figures = {
        "shape": args.shape,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "quantization": "nf4" if torch.cuda.is_available() and args.quantization != "none" else "none",
        "steps": args.steps,
        "steps_per_s": round(steps_per_s, 3),
        "items_per_s": round(steps_per_s * config.batch_size, 1),
        "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None,
        "checkpoint": str(output / f"checkpoint-{args.steps}"),
    }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
