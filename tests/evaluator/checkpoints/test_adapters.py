import json
import os
import time

import pytest
import torch
from safetensors.torch import save_file

from pricer.evaluator.checkpoints import adapters
from pricer.evaluator.checkpoints.adapters import CONFIG_FILE, WEIGHTS_FILE, content_hash

HOUR_AGO_NS = time.time_ns() - 3600 * 10**9


def _adapter(folder, value: float, *, mtime_ns: int = HOUR_AGO_NS):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(json.dumps({"peft_type": "LORA", "base_model_name_or_path": "x"}))
    save_file({"base_model.model.x.lora_A.weight": torch.full((2, 2), value)}, str(folder / WEIGHTS_FILE))
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        os.utime(folder / name, ns=(mtime_ns, mtime_ns))  # written a while ago: settled, so cacheable
    return folder


@pytest.fixture
def reads(monkeypatch):
    """The folders whose files `content_hash` actually reads."""
    read = []
    real = adapters._hash_files

    def counting(path):
        read.append(path)
        return real(path)

    monkeypatch.setattr(adapters, "_hash_files", counting)
    monkeypatch.setattr(adapters, "_HASHES", type(adapters._HASHES)())
    return read


def test_an_unchanged_checkpoint_is_hashed_from_the_cache(tmp_path, reads):
    folder = _adapter(tmp_path / "checkpoint-1", 1.0)
    first = content_hash(folder)
    assert content_hash(folder) == content_hash(folder) == first
    assert reads == [folder]


def test_a_rewritten_checkpoint_is_hashed_again(tmp_path, reads):
    folder = _adapter(tmp_path / "checkpoint-1", 1.0)
    first = content_hash(folder)
    _adapter(folder, 2.0, mtime_ns=HOUR_AGO_NS + 10**9)  # same size, other content and mtime
    second = content_hash(folder)
    assert second != first and len(reads) == 2
    assert second == content_hash(_adapter(tmp_path / "copy", 2.0))  # a hash of the content, not of the stat


def test_a_just_written_checkpoint_is_not_cached(tmp_path, reads):
    """A rewrite within one timestamp tick (same size, mtime, maybe inode) would look unchanged: fresh files are re-read."""
    folder = _adapter(tmp_path / "checkpoint-1", 1.0, mtime_ns=time.time_ns())
    assert content_hash(folder) == content_hash(folder)
    assert len(reads) == 2


def test_the_cache_is_bounded(tmp_path, reads, monkeypatch):
    monkeypatch.setattr(adapters, "_HASHES_MAX", 2)
    folders = [_adapter(tmp_path / f"checkpoint-{k}", float(k)) for k in range(3)]
    for folder in folders:
        content_hash(folder)
    assert len(adapters._HASHES) == 2
    content_hash(folders[0])  # evicted, read again
    assert reads == [*folders, folders[0]]
