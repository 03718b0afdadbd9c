"""What a LoRA adapter on disk must look like before pricer lets PEFT load it.

An adapter is `adapter_config.json` + `adapter_model.safetensors`. Pickled weights
(`adapter_model.bin`) are refused: unpickling runs arbitrary code.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from safetensors import safe_open

from pricer.evaluator.errors import InvalidAdapter, PickledWeightsRefused

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PICKLED_FILES = ("adapter_model.bin", "pytorch_model.bin")
STATE_FILE = "trainer_state.json"


@dataclass(frozen=True)
class AdapterFiles:
    """A checked adapter folder and its parsed config."""

    path: Path
    config: dict

    @property
    def base_model(self) -> str | None:
        return self.config.get("base_model_name_or_path") or None


def check_file_names(names: list[str], *, where: str) -> None:
    """Refuse a file listing that has no safetensors adapter, before anything is downloaded."""
    if WEIGHTS_FILE not in names:
        if any(name in names for name in PICKLED_FILES):
            raise PickledWeightsRefused(
                f"{where}: the adapter ships only pickled weights (adapter_model.bin); pricer loads safetensors only. "
                "Re-save it with `model.save_pretrained(dir, safe_serialization=True)`."
            )
        raise InvalidAdapter(f"{where}: no {WEIGHTS_FILE} (not a LoRA adapter checkpoint)")
    if CONFIG_FILE not in names:
        raise InvalidAdapter(f"{where}: no {CONFIG_FILE} (not a LoRA adapter checkpoint)")


def read_adapter(path: Path, *, where: str | None = None) -> AdapterFiles:
    """Check an adapter folder: both files present, the config valid JSON, the weights readable safetensors."""
    where = where or str(path)
    check_file_names([p.name for p in path.iterdir()] if path.is_dir() else [], where=where)
    try:
        config = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidAdapter(f"{where}: {CONFIG_FILE} is not valid JSON ({exc})") from exc
    if not isinstance(config, dict) or "peft_type" not in config:
        raise InvalidAdapter(f"{where}: {CONFIG_FILE} is not a PEFT adapter config (no peft_type)")
    try:
        with safe_open(str(path / WEIGHTS_FILE), framework="pt") as weights:
            if not list(weights.keys()):
                raise InvalidAdapter(f"{where}: {WEIGHTS_FILE} holds no tensors")
    except InvalidAdapter:
        raise
    except Exception as exc:  # safetensors raises its own error types for a corrupt header
        raise InvalidAdapter(f"{where}: {WEIGHTS_FILE} is corrupt ({exc})") from exc
    return AdapterFiles(path=path, config=config)


# watch polls hash every checkpoint each time: remember hashes by the files' stat, so only new or rewritten ones are read
_HASHES: OrderedDict[tuple, str] = OrderedDict()
_HASHES_LOCK = threading.Lock()
_HASHES_MAX = 1024
_SETTLED_NS = 2_000_000_000  # a file written in the last 2 s may be rewritten within one timestamp tick: not cached yet


def content_hash(path: Path) -> str:
    """An immutable id for a local adapter: sha256 over its config and weights."""
    stats = [os.stat(path / name) for name in (CONFIG_FILE, WEIGHTS_FILE)]
    key = (str(path.resolve()), *((s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_ino, s.st_dev) for s in stats))
    with _HASHES_LOCK:
        if key in _HASHES:
            _HASHES.move_to_end(key)
            return _HASHES[key]
    digest = _hash_files(path)
    if time.time_ns() - max(s.st_mtime_ns for s in stats) >= _SETTLED_NS:
        with _HASHES_LOCK:
            _HASHES[key] = digest
            while len(_HASHES) > _HASHES_MAX:
                _HASHES.popitem(last=False)
    return digest


def _hash_files(path: Path) -> str:
    digest = hashlib.sha256()
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        with open(path / name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def read_trainer_state(path: Path) -> tuple[int | None, float | None]:
    """(global step, epoch) from the Trainer's `trainer_state.json`, when the folder has one."""
    try:
        state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None, None
    step, epoch = state.get("global_step"), state.get("epoch")
    return (int(step) if isinstance(step, int | float) else None, float(epoch) if isinstance(epoch, int | float) else None)
