"""One-pass pricing on a GPU: an 8B-shaped Llama with random weights, in 4-bit nf4 and in bf16.

No download: the model is made from a Llama 3.1 8B-shaped config, saved once with a rank-32
adapter (the course preset's shape, random weights), then loaded by pricer's own `PriceModel`
in each precision. Per precision it reports: the base's load time, the adapter swap time
(load + release), the batch size pricer picks for 180-token prompts, one-pass pricing items/s
(in bf16 also with the adapter merged, and how often the merged argmax equals the unmerged
one), the peak GPU memory, the ratio to the card's FLOP bound (2 x parameters x tokens per
item, the decoder's weights) at both the datasheet's bf16 peak and a plain bf16 matmul's rate measured in the same
run, and the course's way on the same model: `generate` 3 tokens per item, one item at a time.
From those measured parts it derives the whole sweep (20 checkpoints x 250 items) both ways.

    python -m bench.gpu_pricing                                   # on a CUDA machine
    python -m bench.gpu_pricing --shape tiny --device cpu --items 16 --course-items 4   # plumbing, on a CPU
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.train_gpu import make_random_model
from pricer.evaluator.checkpoints.adapters import read_adapter
from pricer.evaluator.scoring import PriceModel

PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0}
SWEEP_CHECKPOINTS, SWEEP_ITEMS = 20, 250  # a course-sized sweep, for the derived whole-sweep figures


def lora_config():
    from peft import LoraConfig

    # B not zero (init_lora_weights=False): the adapter changes every output, as a trained one does
    return LoraConfig(r=32, lora_alpha=64, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], init_lora_weights=False)


def base_and_adapter(work: Path, shape: str) -> tuple[Path, Path]:
    """The random base and a random rank-32 adapter on it, saved once (the adapter from the model still in memory)."""
    from peft import get_peft_model

    adapter = work / f"adapter-r32-{shape}"

    def save_adapter(model) -> None:
        get_peft_model(model, lora_config()).save_pretrained(adapter)

    base = make_random_model(work / f"random-{shape}", shape, then=save_adapter)
    if not (adapter / "adapter_model.safetensors").is_file():  # the base was cached from an earlier run
        from transformers import AutoModelForCausalLM

        save_adapter(AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16))
    return base, adapter


def matmul_tflops(device: torch.device) -> float | None:
    """A plain bf16 8192^3 matmul's rate on this card (mean of 10 after 3 warm-ups): the ceiling actually reachable."""
    if device.type != "cuda":
        return None
    a, b = (torch.randn(8192, 8192, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / 10
    del a, b
    return 2 * 8192**3 / seconds / 1e12


def prompt_of_tokens(tokenizer, tokens: int, seed: int) -> str:
    words = " ".join(f"part{(seed * 7919 + i) % 997}" for i in range(tokens))
    prompt = f"How much does this cost to the nearest dollar?\n\n{words}\n\nPrice is $"
    ids = tokenizer(prompt)["input_ids"]
    while len(ids) > tokens:  # trim the description until the prompt is `tokens` long
        words = words.rsplit(" ", 1)[0]
        prompt = f"How much does this cost to the nearest dollar?\n\n{words}\n\nPrice is $"
        ids = tokenizer(prompt)["input_ids"]
    return prompt


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_price(model: PriceModel, prompts: list[str], name: str, batch_size: int, merged: bool) -> tuple[float, np.ndarray]:
    """Items/s of one-pass pricing (after a one-batch warm-up) and the argmax prices."""
    model.price(prompts[:batch_size], adapter=name, batch_size=batch_size, merged=merged)
    synchronize(model.device)
    started = time.perf_counter()
    prices = model.price(prompts, adapter=name, batch_size=batch_size, merged=merged)
    synchronize(model.device)
    return len(prompts) / (time.perf_counter() - started), prices.argmax


def course_rate(model: PriceModel, prompts: list[str], name: str) -> float:
    """Items/s of the course's tester on the same model and adapter: one `generate` of 3 tokens per item."""
    with model.lock, model.using(name) as peft, torch.inference_mode():
        for i, prompt in enumerate([prompts[0], *prompts]):  # the first is a warm-up
            if i == 1:
                synchronize(model.device)
                started = time.perf_counter()
            inputs = model.tokenizer(prompt, return_tensors="pt").to(model.device)
            peft.generate(**inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False,
                          pad_token_id=model.tokenizer.pad_token_id)
        synchronize(model.device)
    return len(prompts) / (time.perf_counter() - started)


def measure(base: Path, adapter: Path, args, device: torch.device, *, load_in_4bit: bool) -> dict:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    model = PriceModel(str(base), device=device.type, load_in_4bit=load_in_4bit)
    load_s = time.perf_counter() - started
    prompts = [prompt_of_tokens(model.tokenizer, args.tokens, i) for i in range(args.items)]
    swaps = []
    for i in range(3):
        synchronize(device)
        started = time.perf_counter()
        name = model.load_adapter(read_adapter(adapter), f"a{i}")
        synchronize(device)
        swaps.append(time.perf_counter() - started)
        if i < 2:
            model.release_adapter(name)
    batch_size = args.batch_size or model.auto_batch_size(args.tokens)
    result = {
        "precision": "nf4" if load_in_4bit else ("bf16" if device.type == "cuda" else "fp32"),
        "base_load_s": round(load_s, 1),
        "adapter_swap_s": round(sorted(swaps)[1], 3),
        "batch_size": batch_size,
    }
    rate, unmerged = timed_price(model, prompts, name, batch_size, merged=False)
    result["items_per_s"] = round(rate, 1)
    if model.mergeable(name):
        merged_rate, merged = timed_price(model, prompts, name, batch_size, merged=True)
        result["items_per_s_merged"] = round(merged_rate, 1)
        result["merged_argmax_equal_share"] = round(float(np.mean(merged == unmerged)), 4)
        rate = max(rate, merged_rate)  # what an evaluation gets: it merges where exact
    course = course_rate(model, prompts[: args.course_items], name)
    result["course_items_per_s"] = round(course, 2)
    result["one_pass_over_course"] = round(rate / course, 1)
    # the whole sweep from the measured parts: the course reloads the base per checkpoint; pricer loads it once
    course_sweep = SWEEP_CHECKPOINTS * (load_s + SWEEP_ITEMS / course)
    pricer_sweep = load_s + SWEEP_CHECKPOINTS * (result["adapter_swap_s"] + SWEEP_ITEMS / rate)
    result[f"sweep_{SWEEP_CHECKPOINTS}x{SWEEP_ITEMS}_s"] = {"course": round(course_sweep), "pricer": round(pricer_sweep, 1),
                                                          "ratio": round(course_sweep / pricer_sweep, 1)}
    if device.type == "cuda":
        result["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    result["best_items_per_s"] = round(rate, 1)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=("8b", "tiny"), default="8b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--items", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=None, help="items per forward pass (default: pricer's pick)")
    parser.add_argument("--tokens", type=int, default=180, help="prompt length in tokens")
    parser.add_argument("--course-items", type=int, default=32, help="items priced the course's way (one generate each)")
    parser.add_argument("--peak-tflops", type=float, help="the card's dense bf16 peak (default: looked up by name)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "pricer-gpu-bench")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --shape tiny --device cpu to check the plumbing")
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    peak = args.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    matmul = matmul_tflops(device)
    started = time.perf_counter()
    base, adapter = base_and_adapter(args.work, args.shape)
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(base)
    # FLOPs per item: 2 x every decoder weight x each token, plus the head at the last position only
    head_dim = config.hidden_size // config.num_attention_heads
    per_layer = (config.hidden_size * head_dim * (2 * config.num_attention_heads + 2 * config.num_key_value_heads)
                 + 3 * config.hidden_size * config.intermediate_size)
    parameters = config.num_hidden_layers * per_layer
    flops_per_item = 2 * (parameters * args.tokens + config.hidden_size * config.vocab_size)
    print(json.dumps({"device": name, "torch": torch.__version__, "peak_bf16_tflops": peak,
                      "measured_matmul_bf16_tflops": round(matmul, 1) if matmul else None,
                      "decoder_parameters": parameters, "tokens_per_item": args.tokens, "gflop_per_item": round(flops_per_item / 1e9, 1),
                      "model_ready_s": round(time.perf_counter() - started, 1)}), flush=True)
    for load_in_4bit in (True, False) if device.type == "cuda" else (False,):
        result = measure(base, adapter, args, device, load_in_4bit=load_in_4bit)
        for label, tflops in (("datasheet", peak), ("matmul", matmul)):
            if tflops:
                bound = tflops * 1e12 / flops_per_item
                result[f"share_of_flop_bound_{label}"] = round(result["best_items_per_s"] / bound, 3)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
