"""One-pass pricing on a GPU: an 8B-shaped Llama with random weights, in 4-bit nf4 and in bf16.

No download: the model is made from a Llama 3.1 8B-shaped config, saved once, then loaded
by pricer's own `PriceModel` in each precision. A rank-32 adapter (the course preset's
shape, random weights) is attached; the script reports one-pass pricing items/s on
180-token prompts, the adapter swap time (load + release), the peak GPU memory, and the
ratio of the measured throughput to the card's FLOP bound (2 x parameters x tokens per item).

    python -m bench.gpu_pricing --items 512 --batch-size 64
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from bench.train_gpu import make_random_model
from pricer.evaluator.checkpoints.adapters import read_adapter
from pricer.evaluator.scoring import PriceModel

PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0}


def random_adapter(base: Path, folder: Path) -> Path:
    """A rank-32 LoRA on q/k/v/o with random weights, saved as a real adapter folder."""
    if (folder / "adapter_model.safetensors").is_file():
        return folder
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16, device_map={"": "cuda"})
    config = LoraConfig(r=32, lora_alpha=64, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(folder)
    del model
    torch.cuda.empty_cache()
    return folder


def prompt_of_tokens(tokenizer, tokens: int, seed: int) -> str:
    words = " ".join(f"part{(seed * 7919 + i) % 997}" for i in range(tokens))
    prompt = f"How much does this cost to the nearest dollar?\n\n{words}\n\nPrice is $"
    ids = tokenizer(prompt)["input_ids"]
    while len(ids) > tokens:  # trim the description until the prompt is `tokens` long
        words = words.rsplit(" ", 1)[0]
        prompt = f"How much does this cost to the nearest dollar?\n\n{words}\n\nPrice is $"
        ids = tokenizer(prompt)["input_ids"]
    return prompt


def measure(base: Path, adapter: Path, *, load_in_4bit: bool, items: int, batch_size: int, tokens: int) -> dict:
    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    model = PriceModel(str(base), device="cuda", load_in_4bit=load_in_4bit)
    load_s = time.perf_counter() - started
    prompts = [prompt_of_tokens(model.tokenizer, tokens, i) for i in range(items)]
    swaps = []
    for i in range(3):
        torch.cuda.synchronize()
        started = time.perf_counter()
        name = model.load_adapter(read_adapter(adapter), f"a{i}")
        torch.cuda.synchronize()
        swaps.append(time.perf_counter() - started)
        if i < 2:
            model.release_adapter(name)
    model.price(prompts[:batch_size], adapter=name, batch_size=batch_size)  # warm-up
    torch.cuda.synchronize()
    started = time.perf_counter()
    model.price(prompts, adapter=name, batch_size=batch_size)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    parameters = sum(p.numel() for p in model.model.parameters())  # 4-bit layers count packed; use the config's size below
    del model
    torch.cuda.empty_cache()
    return {
        "precision": "nf4" if load_in_4bit else "bf16",
        "base_load_s": round(load_s, 1),
        "adapter_swap_s": round(sorted(swaps)[1], 3),
        "items_per_s": round(items / seconds, 1),
        "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "parameters_reported": parameters,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=180, help="prompt length in tokens")
    parser.add_argument("--peak-tflops", type=float, help="the card's dense bf16 peak (default: looked up by name)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "pricer-gpu-bench")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("this benchmark needs a CUDA device")
    name = torch.cuda.get_device_name()
    peak = args.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    base = make_random_model(args.work / "random-8b", "8b")
    adapter = random_adapter(base, args.work / "adapter-r32")
    parameters = 8.03e9  # Llama 3.1 8B's shape
    print(json.dumps({"device": name, "peak_bf16_tflops": peak, "tokens_per_item": args.tokens}))
    for load_in_4bit in (True, False):
        result = measure(base, adapter, load_in_4bit=load_in_4bit, items=args.items, batch_size=args.batch_size, tokens=args.tokens)
        if peak:
            bound = peak * 1e12 / (2 * parameters * args.tokens)
            result["flop_bound_items_per_s"] = round(bound, 1)
            result["share_of_flop_bound"] = round(result["items_per_s"] / bound, 3)
        print(json.dumps(result))


if __name__ == "__main__":
    main()
