"""Where one-pass pricing's GPU time goes: a kernel profile of pricer's forward passes on the 8B shape, and torch.compile beside it.

The model and adapter are `gpu_pricing`'s (an 8B-shaped random Llama in bf16, a rank-32 adapter,
built once and cached). The adapter is merged as an evaluation merges it; the same length-sorted
batches of 180-token prompts are priced eagerly (timed), then under `torch.profiler` (kernel time
by kind: matmuls, attention, the rest, and the share of the wall time the GPU was busy), then
through `torch.compile` (its compile time and items/s).

    python -m bench.gpu_profile            # on a CUDA machine
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from bench.gpu_pricing import base_and_adapter, prompt_of_tokens
from pricer.evaluator.checkpoints.adapters import read_adapter
from pricer.evaluator.scoring import PriceModel, batch_order

KINDS = {  # kernel-name fragments, lower case, first match wins (attention's kernels can be CUTLASS ones)
    "attention": ("fmha", "flash", "attention", "attn"),
    "matmul": ("gemm", "nvjet", "cutlass", "xmma", "matmul", "cublas"),
}


def kind(kernel: str) -> str:
    name = kernel.lower()
    return next((k for k, fragments in KINDS.items() if any(f in name for f in fragments)), "other (norms, rotary, activations, copies)")


def timed(fn) -> float:
    torch.cuda.synchronize()
    started = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=256)
    parser.add_argument("--tokens", type=int, default=180)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "pricer-gpu-bench")
    args = parser.parse_args()
    base, adapter = base_and_adapter(args.work, "8b")
    model = PriceModel(str(base), device="cuda")
    name = model.load_adapter(read_adapter(adapter), "a")
    prompts = [prompt_of_tokens(model.tokenizer, args.tokens, i) for i in range(args.items)]
    encoded = model.tokenizer(prompts)["input_ids"]
    batch_size = model.auto_batch_size(args.tokens)
    batches = [model.tokenizer.pad({"input_ids": [encoded[i] for i in rows]}, return_tensors="pt").to(model.device)
               for rows in batch_order([len(ids) for ids in encoded], batch_size)]

    with model.lock, model.using(name, merged=True) as merged, torch.inference_mode():
        def price_all(m=merged) -> None:
            for batch in batches:
                model._price_batch(m, batch)

        price_all()  # warm-up
        eager_s = timed(price_all)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]) as prof:
            profiled_s = timed(price_all)
        by_kind: dict[str, float] = {}
        kernels = []
        for event in prof.key_averages():
            device_us = getattr(event, "self_device_time_total", None) or getattr(event, "self_cuda_time_total", 0)
            if device_us and event.device_type == torch.autograd.DeviceType.CUDA:
                by_kind[kind(event.key)] = by_kind.get(kind(event.key), 0.0) + device_us / 1e6
                kernels.append((device_us / 1e6, event.count, event.key[:110]))
        busy = sum(by_kind.values())
        print(json.dumps({"items": args.items, "batch_size": batch_size, "eager_items_per_s": round(args.items / eager_s, 1),
                          "profiled_wall_s": round(profiled_s, 3), "gpu_busy_share": round(busy / profiled_s, 3),
                          "kernel_s_by_kind": {k: round(v, 3) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
                          "share_by_kind": {k: round(v / busy, 3) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])}}),
              flush=True)
        for seconds, count, key in sorted(kernels, reverse=True)[:20]:
            print(f"{seconds * 1000:9.1f} ms {count:6d}x  {key}", flush=True)
        if args.no_compile:
            return
        compiled = torch.compile(merged)
        compile_s = timed(lambda: model._price_batch(compiled, batches[0]))
        price_all(compiled)  # any other batch shape compiles here
        compiled_s = timed(lambda: price_all(compiled))
        print(json.dumps({"compile_s": round(compile_s, 1), "compiled_items_per_s": round(args.items / compiled_s, 1),
                          "compiled_over_eager": round(eager_s / compiled_s, 3)}), flush=True)


if __name__ == "__main__":
    main()
