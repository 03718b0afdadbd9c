"""The evaluation requests a run could not hand to its pricer service yet, kept on disk beside the run.

`_pricer-outbox.jsonl` in the trainer's output_dir holds one request per line: `{"repo", "revision"}`, or
`{"repo", "step" (or "epoch"), "after"}` for a Hub push whose commit was not found yet; never a token. The
next training process with a `PricerCallback` on the folder, or `pricer watch` on it, sends them and takes
them out. The leading "_" keeps the file out of the Trainer's own Hub pushes (they skip "_*").
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)
OUTBOX_FILE = "_pricer-outbox.jsonl"
# the Trainer's (and `pricer train --push-to`'s) message for a checkpoint's push: the step, or the epoch when it
# saves by epoch; ", checkpoint" is hub_strategy="checkpoint"'s second commit, of the checkpoint folder only
_PUSH_MESSAGE = re.compile(r"^Training in progress, (step|epoch) (\d+)\b(?!, checkpoint$)")


class Outbox:
    """A run folder's unsent requests. Every change rereads and rewrites the file whole, atomically, under a lock
    on the folder, so a training process and a `pricer watch` on the same run never lose each other's changes."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / OUTBOX_FILE

    def items(self) -> list[dict]:
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return []
        items = []
        for line in filter(str.strip, lines):
            try:
                items.append(json.loads(line))
            except ValueError:  # a line edited by hand, say: the others still go out
                log.warning("%s: skipping a line that is not JSON: %.80s", self.path, line)
        return items

    def add(self, body: dict) -> None:
        self._change(lambda items: items if body in items else [*items, body])

    def remove(self, body: dict) -> None:
        self._change(lambda items: [item for item in items if item != body])

    def replace(self, old: dict, new: dict) -> None:
        self._change(lambda items: [new if item == old else item for item in items])

    def _change(self, change: Callable[[list[dict]], list[dict]]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with _locked(self.folder):
            items = change(self.items())
            if not items:
                self.path.unlink(missing_ok=True)
                return
            partial = self.path.with_name(OUTBOX_FILE + ".tmp")
            with open(partial, "w") as file:
                file.writelines(json.dumps(item) + "\n" for item in items)
                file.flush()
                os.fsync(file.fileno())
            os.replace(partial, self.path)  # a reader sees the old file or the new one, never half of one


@contextmanager
def _locked(folder: Path):
    # the folder itself is locked: a lock file would stay behind in every run folder
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def resolve_pushes(items: list[dict], api) -> list[dict]:
    """`items` with each Hub push (`{"repo", "step" or "epoch", "after"}`) that has landed named by its commit
    instead (`{"repo", "revision"}`); the others as they are. `api`: an `HfApi` that can read the repos."""
    listed: dict[tuple, dict[tuple, str]] = {}
    resolved = []
    for item in items:
        if "revision" not in item:
            key = (item["repo"], item.get("after"))
            if key not in listed:
                listed[key] = _pushes(api, *key)
            mark = ("step", item["step"]) if "step" in item else ("epoch", item.get("epoch"))
            if commit := listed[key].get(mark):
                item = {"repo": item["repo"], "revision": commit}
        resolved.append(item)
    return resolved


def _pushes(api, repo: str, after: str | None) -> dict[tuple, str]:
    """Each ("step", N) or ("epoch", N) pushed to `repo` since its commit `after` (the head when training began: an
    earlier run's push of the same step is not this one), with the newest commit that names it."""
    try:
        commits = api.list_repo_commits(repo)  # newest first
    except Exception as exc:  # the Hub unreachable, the repo not made yet: the next look may find it
        log.info("cannot list the commits of %s yet (%s)", repo, type(exc).__name__)
        return {}
    found: dict[tuple, str] = {}
    for commit in commits:
        if commit.commit_id == after:
            break
        if match := _PUSH_MESSAGE.match(commit.title or ""):
            found.setdefault((match.group(1), int(match.group(2))), commit.commit_id)
    return found
