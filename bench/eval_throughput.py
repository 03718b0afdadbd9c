"""Evaluating checkpoints: pricer's path against the course's loop, on the same checkpoints, items and machine.

The course's loop, per revision: load the base model and tokenizer, wrap it with
`PeftModel.from_pretrained`, then price the items one at a time: `generate` 3 new tokens
greedily and parse the number. pricer's path is `Evaluator.evaluate` on the run folder: the
base loaded once, each adapter loaded beside it and released after use, items priced in
length-sorted batches with one forward pass each (the next-token distribution over the
number tokens), every prediction stored in a fresh SQLite store.

The model is the tiny Llama at 4 layers x 256 hidden, 5 checkpoints of one fine-tuning run,
500 catalogue items never trained on (`bench/eval_common.py`; built once and cached). Prints
items x checkpoints per second of both, their ratio in wall time and in CPU time (this
process's, all threads: less sensitive to other jobs on a shared machine), how often
pricer's argmax equals the greedy decoder's number, and the share of padded tokens in pricer's batches (length-sorted)
against the same batches in data order. A second check times `Evaluator.evaluate`, which
fetches the next checkpoint while one is scored, against one `evaluate_revision` after
another, on a run folder whose fetch is slowed down as a Hub download would be.

    python -m bench.eval_throughput
    python -m bench.eval_throughput --profile --skip-baseline --fetch-delay 0   # a cProfile of pricer's path
    python -m bench.eval_throughput --device cuda                               # on a GPU
    python -m bench.eval_throughput --race --checkpoints 20 --fetch-delay 0     # pricer evaluate --race on 20 checkpoints
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer

from bench.eval_common import WORK, base_and_run, checkpoints, items
from pricer.evaluator.checkpoints.sources import LocalRun
from pricer.evaluator.evaluate import Evaluator
from pricer.evaluator.scoring import CPU_BATCH_SIZE, batch_order, parse_price
from pricer.evaluator.settings import Settings


def course_loop(base: Path, run: Path, revisions: list[str], prompts: list[str], device: str = "cpu") -> np.ndarray:
    """The course's tester, per revision: a fresh base and PEFT model, then one `generate` per item. (K, n) prices."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    prices = np.zeros((len(revisions), len(prompts)))
    for k, revision in enumerate(revisions):
        tokenizer = AutoTokenizer.from_pretrained(base)
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32  # as PriceModel loads it
        model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype).to(device)
        model = PeftModel.from_pretrained(model, str(run / revision))
        model.eval()
        with torch.inference_mode():
            for i, prompt in enumerate(prompts):
                inputs = tokenizer(prompt, return_tensors="pt").to(device)
                out = model.generate(**inputs, max_new_tokens=3, do_sample=False, pad_token_id=tokenizer.pad_token_id)
                prices[k, i] = parse_price(tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True))
        del model
    return prices


def pricer_path(run: Path, revisions: list[str], dataset, *, batch_size: int | None, home: Path, device: str = "cpu",
                race: bool = False):
    """`Evaluator.evaluate` (or `Evaluator.race`, what `pricer evaluate --race` runs) on the run folder, with a fresh
    store (so nothing is reused): the evaluations (the survivors', when racing), the attention kernel, the race."""
    settings = Settings(home=home, device=device, base_models=[str(run.parent)], **({"batch_size": batch_size} if batch_size else {}))
    evaluator = Evaluator(settings)
    raced = evaluator.race(LocalRun(run), revisions, dataset, policy=settings.policy) if race else None
    evaluations = raced.evaluations if raced else evaluator.evaluate(LocalRun(run), revisions, dataset)
    (model,) = evaluator._models.values()
    return evaluations, model.model.config._attn_implementation, raced


class SlowRun(LocalRun):
    """A run folder whose fetch takes `delay` seconds more, as a Hub download would."""

    def __init__(self, path: Path, delay: float) -> None:
        super().__init__(path)
        self.delay = delay

    def fetch(self, revision):
        time.sleep(self.delay)
        return super().fetch(revision)


def prefetch_gain(
    run: Path, revisions: list[str], dataset, *, delay: float, batch_size: int | None, device: str = "cpu"
) -> tuple[float, float]:
    """Seconds for `Evaluator.evaluate` (fetches the next checkpoint while one is scored) and for one
    `evaluate_revision` after another (fetch, then score), each with a fresh store, on a source whose fetch is slow."""
    seconds = []
    for prefetch in (True, False):
        with tempfile.TemporaryDirectory() as home:
            settings = Settings(home=Path(home), device=device, base_models=[str(run.parent)], **({"batch_size": batch_size} if batch_size else {}))
            evaluator, source = Evaluator(settings), SlowRun(run, delay)
            resolved = [source.resolve(r) for r in revisions]
            started = time.perf_counter()
            if prefetch:
                evaluator.evaluate(source, revisions, dataset)
            else:
                for revision in resolved:
                    evaluator.evaluate_revision(source, revision, dataset)
            seconds.append(time.perf_counter() - started)
    return seconds[0], seconds[1]


def padding_share(lengths: list[int], batches: list[np.ndarray]) -> float:
    """Padded tokens / all tokens, when each batch is padded to its longest row."""
    padded = sum(len(rows) * max(lengths[i] for i in rows) for rows in batches)
    return 1 - sum(lengths) / padded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--checkpoints", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=None, help="items per forward pass (default: pricer's)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the batch size is then chosen by free memory)")
    parser.add_argument("--skip-baseline", action="store_true", help="pricer's path only (for profiling)")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of pricer's path")
    parser.add_argument("--fetch-delay", type=float, default=1.0,
                        help="prefetch check: seconds each fetch takes (a simulated download); 0 skips the check")
    parser.add_argument("--fetch-items", type=int, default=100, help="prefetch check: items priced per checkpoint")
    parser.add_argument("--race", action="store_true", help="pricer's path races the checkpoints (pricer evaluate --race)")
    parser.add_argument("--work", type=Path, default=WORK)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)  # the machine is shared

    base, run = base_and_run(args.work)
    revisions = checkpoints(run, args.checkpoints)
    dataset = items(args.items)
    pairs = len(revisions) * len(dataset)
    print(f"model: {base.name}, checkpoints: {', '.join(revisions)}, items: {len(dataset)}, threads: {args.threads}")
    tokenizer = AutoTokenizer.from_pretrained(base)
    started = time.perf_counter()
    lengths = [len(ids) for ids in tokenizer(dataset.prompts)["input_ids"]]
    tokenise_ms = (time.perf_counter() - started) * 1000

    profiler = cProfile.Profile() if args.profile else None
    with tempfile.TemporaryDirectory() as home:
        if profiler:
            profiler.enable()
        started, cpu_started = time.perf_counter(), time.process_time()
        evaluations, attention, raced = pricer_path(run, revisions, dataset, batch_size=args.batch_size, home=Path(home),
                                                    device=args.device, race=args.race)
        pricer_s, pricer_cpu = time.perf_counter() - started, time.process_time() - cpu_started
        if profiler:
            profiler.disable()
    if raced is not None:
        print(f"racing: {len(raced.evaluations)} of {len(revisions)} checkpoints scored in full, {len(raced.dropped)} stopped; "
              f"{raced.result.scorings:,} of {raced.result.full:,} validation-item scorings ({raced.saved:.0%} saved)")
    survivors = {e.revision.commit for e in evaluations}
    kept = [i for i, r in enumerate(revisions) if LocalRun(run).resolve(r).commit in survivors]  # rows the loop shares
    ours = np.stack([e.prices.argmax for e in evaluations])
    print(f"attention: {attention}; tokenising the {len(dataset)} prompts takes {tokenise_ms:.0f} ms "
          f"({tokenise_ms / 1000 / (pricer_s / len(revisions)):.2%} of pricing them once)")
    path = "Evaluator.race" if args.race else "Evaluator.evaluate"
    print(f"pricer ({path}):{' ' * (20 - len(path))}{pairs / pricer_s:8.1f} items x checkpoints/s  ({pricer_s:.1f} s, "
          f"CPU time {pricer_cpu:.1f} s)")
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(30)
        print(out.getvalue())

    batch_size = args.batch_size or CPU_BATCH_SIZE
    in_order = [np.arange(len(lengths))[s : s + batch_size] for s in range(0, len(lengths), batch_size)]
    print(f"padded tokens, batches of {batch_size}: length-sorted {padding_share(lengths, batch_order(lengths, batch_size)):.1%}, "
          f"in data order {padding_share(lengths, in_order):.1%} (prompts of {min(lengths)}..{max(lengths)} tokens)")
    distinct = [len(np.unique(row)) for row in ours]
    differ = sum(not np.array_equal(ours[a], ours[b]) for a in range(len(ours)) for b in range(a + 1, len(ours)))
    print(f"pricer's argmax: distinct prices per checkpoint {distinct}; checkpoint pairs that differ {differ}/"
          f"{len(ours) * (len(ours) - 1) // 2}")
    if args.fetch_delay > 0:
        subset = items(args.fetch_items)
        overlapped, sequential = prefetch_gain(run, revisions, subset, delay=args.fetch_delay, batch_size=args.batch_size,
                                                  device=args.device)
        print(f"fetch taking {args.fetch_delay:g} s, {len(subset)} items: Evaluator.evaluate (prefetching) {overlapped:.1f} s, "
              f"one evaluate_revision after another {sequential:.1f} s ({sequential / overlapped:.2f}x)")
    if args.skip_baseline:
        return

    started, cpu_started = time.perf_counter(), time.process_time()
    greedy = course_loop(base, run, revisions, dataset.prompts, args.device)
    loop_s, loop_cpu = time.perf_counter() - started, time.process_time() - cpu_started
    agree = float(np.mean(ours == greedy[kept]))
    print(f"course loop (reload, generate/item): {pairs / loop_s:8.1f} items x checkpoints/s  ({loop_s:.1f} s, "
          f"CPU time {loop_cpu:.1f} s)")
    print(f"speed-up: {loop_s / pricer_s:.1f}x in wall time, {loop_cpu / pricer_cpu:.1f}x in CPU time; argmax equals greedy on {agree:.2%} of {len(kept) * len(dataset)} items x checkpoints")


if __name__ == "__main__":
    main()
