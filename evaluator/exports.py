"""Exports: every stored prediction as a table, and a run's results record, for use outside pricer.

One row per item and checkpoint: the checkpoint's revision, commit and step, the item's
prompt, its true price and split, every stored estimate, the 80% interval and the mass on
number tokens. The results record (as lm-evaluation-harness writes one per run) names what
the figures depend on, each by a fingerprint: the base model, its tokenizer, the held-out
data and the scoring config; the package versions; each checkpoint's validation metrics;
and the choice.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import pandas as pd

from pricer.evaluator.data import HeldOutSet
from pricer.evaluator.records import ESTIMATES, Evaluation
from pricer.evaluator.stats.selection import Choice

FORMATS = ("parquet", "csv", "jsonl")
PACKAGES = ("pricer", "torch", "transformers", "peft", "huggingface_hub", "tokenizers", "safetensors", "numpy")
COLUMNS = ["revision", "commit", "step", "epoch", "item", "text", "truth", "split", "argmax", "mean", *ESTIMATES, "p_number"]


def prediction_rows(evaluation: Evaluation, data: HeldOutSet) -> pd.DataFrame:
    """The evaluation's predictions, one row per item it priced (a partial evaluation: the items it was scored on)."""
    items = evaluation.item_ids if evaluation.item_ids is not None else range(evaluation.n)
    items = list(map(int, items))
    revision = evaluation.revision
    frame = pd.DataFrame({
        "revision": revision.revision,
        "commit": revision.commit,
        "step": revision.step,
        "epoch": revision.epoch,
        "item": items,
        "text": [data.prompts[i] for i in items],
        "truth": evaluation.truth,
        "split": ["test" if is_test else "validation" for is_test in evaluation.test],
        "argmax": evaluation.prices.argmax,
        "mean": evaluation.prices.mean,
        **{name: getattr(evaluation.prices, name) for name in ESTIMATES},  # None in rows an earlier pricer stored
        "p_number": evaluation.prices.p_number,
    })
    return frame[COLUMNS]


def predictions_table(evaluations: list[Evaluation], data: HeldOutSet) -> pd.DataFrame:
    """Every evaluation's rows, checkpoint after checkpoint by step."""
    ordered = sorted(evaluations, key=lambda e: (e.revision.step is None, e.revision.step or 0, e.id))
    return pd.concat([prediction_rows(e, data) for e in ordered], ignore_index=True) if ordered else pd.DataFrame(columns=COLUMNS)


def write_table(frame: pd.DataFrame, path: Path, fmt: str) -> Path:
    """`frame` as a Parquet, CSV or JSON-lines file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        frame.to_parquet(path, index=False)
    elif fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        raise ValueError(f"unknown format {fmt!r}: one of {', '.join(FORMATS)}")
    return path


def folder_fingerprint(folder: Path, names: tuple[str, ...]) -> str | None:
    """sha256 over the named files of a model folder that exist (None when none does): config and tokenizer files
    are read whole; weights are named by their size and safetensors header (shapes and dtypes), not read."""
    digest, found = hashlib.sha256(), False
    for name in names:
        for path in sorted(folder.glob(name)):
            found = True
            digest.update(path.name.encode() + b"\0")
            if path.suffix == ".safetensors":
                with open(path, "rb") as file:
                    size = int.from_bytes(file.read(8), "little")
                    digest.update(path.stat().st_size.to_bytes(8, "little") + file.read(min(size, 100_000_000)))
            else:
                digest.update(path.read_bytes())
    return digest.hexdigest() if found else None


def base_fingerprints(base: str) -> dict[str, str | None]:
    """The base model's and its tokenizer's fingerprints: of its folder, or, for a Hub id, of the snapshot in the
    local Hub cache that it was loaded from (None when neither is on this machine; nothing is downloaded)."""
    folder = Path(base)
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        try:
            folder = Path(snapshot_download(base, local_files_only=True))
        except Exception:  # not cached here, or not a Hub id
            return {"model": None, "tokenizer": None}
    return {
        "model": folder_fingerprint(folder, ("config.json", "*.safetensors")),
        "tokenizer": folder_fingerprint(folder, ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")),
    }


def versions() -> dict[str, str | None]:
    found = {}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


def results_record(repo: str, evaluations: list[Evaluation], data: HeldOutSet, choice: Choice | None) -> dict:
    """A run's results: what they depend on (fingerprints, versions), each checkpoint's validation metrics under
    the choice's estimator, and the choice with its test figure."""
    estimator = choice.policy.estimator if choice else "argmax"
    latest = max(evaluations, key=lambda e: e.id) if evaluations else None
    record = {
        "repo": repo,
        "created_at": datetime.now(UTC).isoformat(),
        "versions": versions(),
        "base": None if latest is None else {"name": latest.base_model, **base_fingerprints(latest.base_model)},
        "data": {
            "name": data.name, "fingerprint": data.fingerprint, "items": len(data),
            "validation": int((~data.test).sum()), "test": int(data.test.sum()),
        },
        "config": None if latest is None else json.loads(latest.config_key),
        "estimator": estimator,
        "results": {
            e.revision.revision: {**e.revision.fields(), "complete": e.complete, **e.metrics(estimator).to_dict()}
            for e in sorted(evaluations, key=lambda e: (e.revision.step is None, e.revision.step or 0))
            if e.complete
        },
        "choice": None,
    }
    if choice is not None:
        chosen = choice.chosen.evaluation
        record["choice"] = {
            **chosen.revision.fields(),
            "rule": choice.policy.rule, "metric": choice.policy.metric, "statement": choice.statement,
            "validation": chosen.metrics(estimator).to_dict(),
            "test": choice.test.to_dict() if choice.test else None,
        }
    return record
