"""What a LoRA adapter on disk must look like before pricer lets PEFT load it.

An adapter is `adapter_config.json` + `adapter_model.safetensors`. Pickled weights
(`adapter_model.bin`) are refused: unpickling runs arbitrary code. Every file is read only
when it is a regular file inside the folder's root once symlinks are resolved (a FIFO would
block the reader, a device or a link out of the root would read what it should not), and
configs and trainer states only up to a size limit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import stat
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from safetensors import safe_open

from pricer.evaluator.errors import InvalidAdapter, PickledWeightsRefused

log = logging.getLogger(__name__)

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PICKLED_FILES = ("adapter_model.bin", "pytorch_model.bin")
STATE_FILE = "trainer_state.json"
CONFIG_MAX_BYTES = 1 << 20  # an adapter config is a few KB
STATE_MAX_BYTES = 64 << 20  # a trainer state grows with its log history: tens of MB after a long run
INT64 = 2**63 - 1


@dataclass(frozen=True)
class AdapterFiles:
    """A checked adapter folder and its parsed config; `where` names it for messages (never a server path)."""

    path: Path
    config: dict
    where: str = ""

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


def regular_file(path: Path, *, root: Path, where: str, limit: int | None = None) -> Path:
    """`path` resolved, when it is a regular file inside `root` of at most `limit` bytes; else `InvalidAdapter`.

    `os.stat` never blocks (opening a FIFO would), and the resolved path is what is checked and read."""
    try:
        resolved = path.resolve()
        if not resolved.is_relative_to(root.resolve()):
            raise InvalidAdapter(f"{where}: {path.name} leads outside the folder it is read from")
        found = os.stat(resolved)
    except OSError as exc:
        raise InvalidAdapter(f"{where}: cannot read {path.name} ({exc.strerror})") from exc
    if not stat.S_ISREG(found.st_mode):
        raise InvalidAdapter(f"{where}: {path.name} is not a regular file")
    if limit is not None and found.st_size > limit:
        raise InvalidAdapter(f"{where}: {path.name} has {found.st_size} bytes; at most {limit} are read")
    return resolved


def read_bounded(path: Path, *, root: Path, where: str, limit: int) -> bytes:
    """The bytes of a regular file inside `root`, refused past `limit` bytes (even if it grows while read)."""
    resolved = regular_file(path, root=root, where=where, limit=limit)
    try:
        descriptor = os.open(resolved, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
        with os.fdopen(descriptor, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):  # swapped for something else since the check
                raise InvalidAdapter(f"{where}: {path.name} is not a regular file")
            data = handle.read(limit + 1)
    except OSError as exc:
        raise InvalidAdapter(f"{where}: cannot read {path.name} ({exc.strerror})") from exc
    if len(data) > limit:
        raise InvalidAdapter(f"{where}: {path.name} is over {limit} bytes")
    return data


def read_adapter(path: Path, *, where: str | None = None, root: Path | None = None) -> AdapterFiles:
    """Check an adapter folder: both files present and regular, the config valid JSON, the weights readable
    safetensors. Files may be links only to places inside `root` (default: the folder itself)."""
    where = where or path.name
    root = root or path
    try:
        names = [p.name for p in path.iterdir()] if path.is_dir() else []
    except OSError as exc:
        raise InvalidAdapter(f"{where}: cannot list the checkpoint folder ({exc.strerror})") from exc
    check_file_names(names, where=where)
    try:
        config = json.loads(read_bounded(path / CONFIG_FILE, root=root, where=where, limit=CONFIG_MAX_BYTES))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidAdapter(f"{where}: {CONFIG_FILE} is not valid JSON ({exc})") from exc
    if not isinstance(config, dict) or "peft_type" not in config:
        raise InvalidAdapter(f"{where}: {CONFIG_FILE} is not a PEFT adapter config (no peft_type)")
    if not isinstance(config.get("base_model_name_or_path") or "", str):
        raise InvalidAdapter(f"{where}: {CONFIG_FILE} names its base model with something other than a string")
    weights_file = regular_file(path / WEIGHTS_FILE, root=root, where=where)
    try:
        with safe_open(str(weights_file), framework="pt") as weights:
            if not list(weights.keys()):
                raise InvalidAdapter(f"{where}: {WEIGHTS_FILE} holds no tensors")
    except InvalidAdapter:
        raise
    except Exception as exc:  # safetensors raises its own error types for a corrupt header
        raise InvalidAdapter(f"{where}: {WEIGHTS_FILE} is corrupt ({exc})") from exc
    return AdapterFiles(path=path, config=config, where=where)


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
        descriptor = os.open(path / name, os.O_RDONLY | os.O_NONBLOCK)  # checked regular by read_adapter; never blocks
        with os.fdopen(descriptor, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise InvalidAdapter(f"{path.name}: {name} is not a regular file")
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


class TrainerState(NamedTuple):
    """What a checkpoint's `trainer_state.json` tells: where training was, and its training loss there."""

    step: int | None = None
    epoch: float | None = None
    loss: float | None = None  # the last training loss logged at or before `step`


def read_trainer_state(path: Path, *, root: Path | None = None) -> TrainerState:
    """Step, epoch and training loss from the Trainer's `trainer_state.json`, when the folder has a readable one.

    Only values pricer can store and draw are taken: a step within 0..2**63-1, a finite epoch and loss of at least 0."""
    if not (path / STATE_FILE).exists():
        return TrainerState()
    try:
        state = json.loads(read_bounded(path / STATE_FILE, root=root or path, where=path.name, limit=STATE_MAX_BYTES))
    except (InvalidAdapter, json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        log.warning("%s: %s is unreadable, so step and epoch come from the folder name (%s)", path.name, STATE_FILE, exc)
        return TrainerState()
    if not isinstance(state, dict):
        return TrainerState()
    step, epoch = state.get("global_step"), state.get("epoch")
    step = int(step) if _number(step, 0, INT64) else None
    return TrainerState(step, float(epoch) if _number(epoch, 0, math.inf) else None, _last_loss(state.get("log_history"), step))


def _last_loss(history: object, step: int | None) -> float | None:
    """The training loss of the last `log_history` entry that has one (evaluation entries have `eval_loss` instead)."""
    if not isinstance(history, list):
        return None
    for entry in reversed(history):
        if not isinstance(entry, dict) or not _number(entry.get("loss"), 0, math.inf):
            continue
        if step is None or not _number(entry.get("step"), 0, INT64) or entry["step"] <= step:
            return float(entry["loss"])
    return None


def _number(value: object, low: float, high: float) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and low <= value <= high
