"""Checkpoint sources: where revisions of a training run come from.

- `HubRepo`: a Hugging Face Hub repo (or any Hub-compatible `HF_ENDPOINT`); a revision is a
  commit, a branch, a tag or a short sha, resolved to its full commit sha.
- `LocalRun`: a Trainer `output_dir`; a revision is a `checkpoint-N/` folder, its immutable
  id a content hash of the adapter files. Nothing outside the configured root (for the CLI:
  the run folder) is read, whatever links a folder holds.

Both give `Revision`s (identity and provenance) and `fetch` a checked adapter folder. A scan
of a run skips a broken checkpoint (a save cut off by a crash) and says why, so one broken
folder never hides the others.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from pricer.evaluator.checkpoints.adapters import (
    CONFIG_FILE,
    INT64,
    STATE_FILE,
    WEIGHTS_FILE,
    AdapterFiles,
    check_file_names,
    content_hash,
    read_adapter,
    read_trainer_state,
)
from pricer.evaluator.errors import HubUnavailable, InvalidAdapter, InvalidRepoId, RepoNotFound, RevisionNotFound
from pricer.evaluator.records import Revision

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_STEP = re.compile(r"\bstep (\d+)", re.IGNORECASE)
_EPOCH = re.compile(r"\bepoch (\d+(?:\.\d+)?)", re.IGNORECASE)
NAME_MAX = 255  # the longest file name the file systems pricer runs on accept
SETTLING_SECONDS = 10.0  # a broken folder changed this recently is still being written: not reported yet


@dataclass(frozen=True)
class Checkpoint:
    """A fetched revision: its identity and its checked adapter on local disk."""

    revision: Revision
    adapter: AdapterFiles


@dataclass(frozen=True)
class Scan:
    """A run's usable checkpoints, oldest first, and the ones skipped with the reason (a broken folder)."""

    revisions: list[Revision]
    skipped: list[tuple[Revision, str]] = field(default_factory=list)
    settling: list[tuple[Revision, str]] = field(default_factory=list)  # broken but changed just now: maybe mid-save


class CheckpointSource(Protocol):
    name: str  # the store's key for the run
    label: str  # the run as its user named it, for messages: never a server path

    def scan(self) -> Scan:
        """Every checkpoint of the run, oldest first, and those skipped as broken."""
        ...

    def revisions(self) -> list[Revision]:
        """Every usable checkpoint of the run, oldest first."""
        ...

    def resolve(self, revision: str) -> Revision:
        """The checkpoint that `revision` names now."""
        ...

    def latest(self) -> Revision:
        """The newest checkpoint: the last `checkpoint-N`, or the head of `main`."""
        ...

    def refs(self) -> dict[str, str]:
        """Branch and tag names, each with the commit it points to."""
        ...

    def fetch(self, revision: Revision) -> Checkpoint:
        """Download (if needed) and check the adapter of `revision`."""
        ...


def parse_training_message(message: str | None) -> tuple[int | None, float | None]:
    """(step, epoch) from the Trainer's commit messages ("Training in progress, step N" / "..., epoch N")."""
    if not message:
        return None, None
    step, epoch = _STEP.search(message), _EPOCH.search(message)
    return (int(step.group(1)) if step else None, float(epoch.group(1)) if epoch else None)


def _with_trainer_state(revision: Revision, folder: Path, root: Path) -> Revision:
    # trainer_state.json is exact; commit messages and folder names are the fallback
    state = read_trainer_state(folder, root=root)
    return replace(
        revision,
        step=state.step if state.step is not None else revision.step,
        epoch=state.epoch if state.epoch is not None else revision.epoch,
        train_loss=state.loss,
    )


class LocalRun:
    """A training run's output folder holding `checkpoint-N/` adapter folders.

    Args:
        path: the run folder.
        root: the only folder files may be read from (the service's checkpoint root); default: the run folder.
        label: the run as the user named it (`local/<name>`), for messages.
    """

    def __init__(self, path: str | Path, *, root: Path | None = None, label: str | None = None) -> None:
        self.label = label or str(path)
        folder = Path(path).expanduser().resolve()
        if root is not None and not folder.is_relative_to(root.expanduser().resolve()):
            raise InvalidRepoId(f"{self.label}: outside the checkpoint root")
        if not folder.is_dir():
            raise RepoNotFound(f"{self.label}: no such run folder")
        self.path = folder
        self.root = root.expanduser().resolve() if root is not None else folder
        self.name = str(folder)

    def scan(self) -> Scan:
        try:
            numbered = sorted(
                (int(m.group(1)), p.name) for p in self.path.iterdir() if (m := _CHECKPOINT.match(p.name)) and _is_dir(p)
            )
        except OSError as exc:
            raise RepoNotFound(f"{self.label}: cannot list the run folder ({exc.strerror})") from exc
        if not numbered:
            raise RevisionNotFound(f"{self.label}: no checkpoint-N folders")
        found = Scan([])
        for _, name in numbered:
            try:
                found.revisions.append(self.resolve(name))
            except (InvalidAdapter, RevisionNotFound) as exc:
                (found.settling if self._settling(name) else found.skipped).append((self._broken(name), str(exc)))
        return found

    def revisions(self) -> list[Revision]:
        scan = self.scan()
        if not scan.revisions:
            reasons = "; ".join(reason for _, reason in [*scan.skipped, *scan.settling])
            raise RevisionNotFound(f"{self.label}: no usable checkpoint ({reasons})")
        return scan.revisions

    def resolve(self, revision: str) -> Revision:
        folder = self.path / revision
        if len(revision) > NAME_MAX or not _SAFE_NAME.match(revision) or not _is_dir(folder):
            raise RevisionNotFound(f"{self.label}: no checkpoint folder {revision[:80]!r}")
        where = f"{self.label}/{revision}"
        if not folder.resolve().is_relative_to(self.root):
            raise InvalidAdapter(f"{where}: the folder is a link to a place outside the checkpoint root")
        match = _CHECKPOINT.match(revision)
        step = int(match.group(1)) if match else None
        if step is not None and step > INT64:
            raise InvalidAdapter(f"{where}: the step number is out of range")
        adapter = read_adapter(folder, where=where, root=self.root)
        found = Revision(self.name, revision, content_hash(adapter.path), step=step)
        return _with_trainer_state(found, folder, self.root)

    def latest(self) -> Revision:
        return self.revisions()[-1]

    def refs(self) -> dict[str, str]:
        return {}  # a run folder has no branches or tags

    def fetch(self, revision: Revision) -> Checkpoint:
        folder = self.path / revision.revision
        if not folder.resolve().is_relative_to(self.root):
            raise InvalidAdapter(f"{self.label}/{revision.revision}: the folder is a link outside the checkpoint root")
        adapter = read_adapter(folder, where=f"{self.label}/{revision.revision}", root=self.root)
        if content_hash(folder) != revision.commit:
            raise RevisionNotFound(f"{self.label}/{revision.revision}: changed on disk since it was resolved")
        return Checkpoint(_with_trainer_state(revision, folder, self.root), adapter)

    def _settling(self, name: str) -> bool:
        try:
            return time.time() - (self.path / name).stat().st_mtime < SETTLING_SECONDS
        except OSError:
            return False

    def _broken(self, name: str) -> Revision:
        """A broken folder as a revision: its id a hash of what it holds, so it is reported once while unchanged."""
        digest = hashlib.sha256(b"broken checkpoint\0")
        try:
            for entry in sorted((self.path / name).iterdir()):
                found = entry.lstat()
                digest.update(f"{entry.name}\0{found.st_size}\0{found.st_mtime_ns}\0".encode(errors="replace"))
        except OSError:
            pass
        match = _CHECKPOINT.match(name)
        step = int(match.group(1)) if match and int(match.group(1)) <= INT64 else None
        return Revision(self.name, name, digest.hexdigest(), step=step)


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # a name too long, a loop of links
        return False


class HubRepo:
    """A model repo on the Hugging Face Hub (or a Hub-compatible endpoint)."""

    def __init__(
        self, repo_id: str, *, token: str | None = None, endpoint: str | None = None, cache_dir: Path | None = None
    ) -> None:
        from huggingface_hub import HfApi

        if not HUB_ID.match(repo_id) or ".." in repo_id or len(repo_id) > 96:
            raise InvalidRepoId(f"{repo_id!r} is not a Hub repo id of the form 'namespace/name'")
        self.name = self.label = repo_id
        self._token, self._endpoint, self._cache_dir = token, endpoint, cache_dir
        self._api = HfApi(endpoint=endpoint, token=token or False)

    def scan(self) -> Scan:
        return Scan(self._adapter_commits())  # a broken adapter on the Hub fails its own job when fetched

    def revisions(self) -> list[Revision]:
        found = self._adapter_commits()
        if not found:  # commits (the repo's initial one at least), but no checkpoint pushed yet
            raise RevisionNotFound(f"{self.name}: no commit holds an adapter ({CONFIG_FILE})")
        return found

    def _adapter_commits(self) -> list[Revision]:
        """The commits that changed the adapter, oldest first: a commit of other files alone (a model card, pricer's
        own) is not another checkpoint."""
        with self._hub_errors():
            commits = self._api.list_repo_commits(self.name)
            found, previous = [], None
            for commit in reversed(commits):  # the Hub lists newest first
                adapter = self._adapter_blobs(commit.commit_id)
                if adapter is not None and adapter != previous:
                    found.append(self._revision(commit.commit_id[:7], commit.commit_id, commit.message or commit.title))
                previous = adapter
        return found

    def _adapter_blobs(self, commit: str) -> tuple[str | None, str | None] | None:
        """What identifies the adapter at `commit`: its config's and weights' blob ids (None: no adapter there)."""
        blobs = {entry.path: getattr(entry, "blob_id", None) for entry in self._api.list_repo_tree(self.name, revision=commit)}
        return (blobs[CONFIG_FILE], blobs.get(WEIGHTS_FILE)) if CONFIG_FILE in blobs else None

    def resolve(self, revision: str) -> Revision:
        """The checkpoint `revision` names: the commit that last changed the adapter at or before it (a branch whose
        head only changed the model card names the checkpoint under it)."""
        if not revision or len(revision) > 256 or ".." in revision:
            raise RevisionNotFound(f"{self.name}: {revision!r} is not a valid revision")
        with self._hub_errors(revision):
            sha = self._api.model_info(self.name, revision=revision).sha
            if sha is None:
                raise RevisionNotFound(f"{self.name}: cannot resolve revision {revision!r}")
            history = self._api.list_repo_commits(self.name, revision=sha)  # newest first
            adapter, chosen = self._adapter_blobs(sha), history[0]
            for parent in history[1:] if adapter is not None else ():
                if self._adapter_blobs(parent.commit_id) != adapter:
                    break
                chosen = parent
        return self._revision(revision, chosen.commit_id, chosen.message or chosen.title)

    def latest(self) -> Revision:
        return self.resolve("main")

    def refs(self) -> dict[str, str]:
        with self._hub_errors():
            refs = self._api.list_repo_refs(self.name)
        return {ref.name: ref.target_commit for ref in [*refs.branches, *refs.tags]}

    def fetch(self, revision: Revision) -> Checkpoint:
        from huggingface_hub import snapshot_download

        where = f"{self.name}@{revision.revision}"
        with self._hub_errors(revision.revision):
            check_file_names(self._api.list_repo_files(self.name, revision=revision.commit), where=where)
            folder = snapshot_download(
                self.name,
                revision=revision.commit,
                allow_patterns=[CONFIG_FILE, WEIGHTS_FILE, STATE_FILE],
                cache_dir=self._cache_dir,
                token=self._token or False,
                endpoint=self._endpoint,
            )
        path = Path(folder)
        cached = path.parents[1]  # <cache>/models--org--name: snapshots/<sha>/ links to its blobs/
        return Checkpoint(_with_trainer_state(revision, path, cached), read_adapter(path, where=where, root=cached))

    def _revision(self, name: str, sha: str, message: str | None) -> Revision:
        step, epoch = parse_training_message(message)
        return Revision(self.name, name, sha, step=step, epoch=epoch, message=message)

    @contextmanager
    def _hub_errors(self, revision: str | None = None) -> Iterator[None]:
        """Translate huggingface_hub's errors into pricer's, naming the repo and revision."""
        from huggingface_hub import errors

        try:
            yield
        except errors.RevisionNotFoundError as exc:
            raise RevisionNotFound(f"{self.name}: no revision {revision!r}") from exc
        except (errors.RepositoryNotFoundError, errors.GatedRepoError) as exc:
            raise RepoNotFound(f"{self.name}: no such Hub repo, or the token cannot see it") from exc
        except errors.LocalEntryNotFoundError as exc:  # what the client raises when the Hub is unreachable
            raise HubUnavailable(f"{self.name}: cannot reach the Hub and nothing is cached") from exc
        except errors.OfflineModeIsEnabled as exc:  # HF_HUB_OFFLINE=1: every call to the Hub's API, cached or not
            raise HubUnavailable(f"{self.name}: the Hub's offline mode is on (HF_HUB_OFFLINE), and listing or resolving "
                                 "revisions needs the Hub") from exc
        except errors.EntryNotFoundError as exc:
            raise InvalidAdapter(f"{self.name}@{revision}: adapter file missing ({exc})") from exc
        except errors.HFValidationError as exc:
            raise RevisionNotFound(f"{self.name}: invalid revision {revision!r} ({exc})") from exc
        except errors.HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else None
            if status in (400, 404, 422):
                raise RevisionNotFound(f"{self.name}: no revision {revision!r}") from exc
            raise HubUnavailable(f"{self.name}: the Hub answered {status}") from exc
        except errors.HTTPError as exc:
            raise HubUnavailable(f"{self.name}: cannot reach the Hub ({type(exc).__name__})") from exc


def open_source(
    spec: str,
    *,
    root: Path | None = None,
    paths: bool = True,
    token: str | None = None,
    endpoint: str | None = None,
    cache_dir: Path | None = None,
) -> CheckpointSource:
    """The checkpoint source `spec` names; every spec is checked here, once.

    - `local/<name>`: the run folder `name` under `root` (refused without a root): no other path is read;
    - a path to a run folder, when `paths` allows it (the CLI; never the service);
    - else a Hub repo id `namespace/name`.
    """
    if spec.startswith("local/"):
        name = spec.removeprefix("local/")
        if root is None:
            raise InvalidRepoId(f"{spec!r}: local runs are not served (no checkpoint root is configured)")
        if not _SAFE_NAME.match(name):
            raise InvalidRepoId(f"{spec!r}: a local run is named local/<folder name>")
        return LocalRun(root / name, root=root, label=spec)
    if paths and (spec.startswith((".", "/", "~")) or _is_dir(Path(spec).expanduser())):
        return LocalRun(spec)
    return HubRepo(spec, token=token, endpoint=endpoint, cache_dir=cache_dir)
