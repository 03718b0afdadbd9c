"""Push every checkpoint to a Hub repo as its own commit, in order, without ever skipping one.

The Trainer's own `hub_strategy="every_save"` skips a push while the previous upload is
still running; here each saved checkpoint is copied aside at once (so checkpoint rotation
cannot delete it) and a background thread uploads the queue in order, retrying failures.
Training never waits for the network, except at the very end, for the queue to drain.
"""

from __future__ import annotations

import logging
import queue
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from transformers import TrainerCallback

from pricer.evaluator.checkpoints.adapters import CONFIG_FILE, STATE_FILE, WEIGHTS_FILE
from pricer.evaluator.errors import HubUnavailable

log = logging.getLogger(__name__)
PUSHED_FILES = (CONFIG_FILE, WEIGHTS_FILE, STATE_FILE)  # never optimizer state or pickled arguments


@dataclass(frozen=True)
class Pushed:
    step: int
    commit: str
    message: str


def commit_message(step: int, epoch: float | None, loss: float | None = None, learning_rate: float | None = None) -> str:
    """The Trainer's own wording, so the evaluator reads step and epoch back from it."""
    message = f"Training in progress, step {step}"
    if epoch is not None:
        message += f", epoch {epoch:.2f}"
    extras = [f"loss {loss:.4f}" if loss is not None else "", f"lr {learning_rate:.3g}" if learning_rate is not None else ""]
    return message + (f" ({', '.join(e for e in extras if e)})" if any(extras) else "")


class HubPublisher:
    """An ordered upload queue to one Hub repo (created private if missing)."""

    def __init__(
        self,
        repo_id: str,
        *,
        token: str | None = None,
        endpoint: str | None = None,
        retry_seconds: float = 5.0,
        max_attempts: int = 10,
    ) -> None:
        from huggingface_hub import HfApi

        self.repo_id = repo_id
        self.api = HfApi(endpoint=endpoint, token=token or False)
        self.retry_seconds, self.max_attempts = retry_seconds, max_attempts
        self.pushed: list[Pushed] = []
        self.failed: list[Path] = []  # staged copies kept on disk when the Hub refused them for good
        self._staging = Path(tempfile.mkdtemp(prefix="pricer-push-"))
        self._queue: queue.Queue[tuple[int, Path, str] | None] = queue.Queue()
        self._closed = False
        try:
            self.api.create_repo(repo_id, private=True, exist_ok=True)
        except Exception as exc:  # before any training: a bad repo or token is a clear error, not a lost run
            raise HubUnavailable(f"cannot create or reach Hub repo {repo_id}: {exc}") from exc
        self._thread = threading.Thread(target=self._upload_all, name="pricer-push", daemon=True)
        self._thread.start()

    def submit(self, checkpoint: Path, step: int, message: str) -> None:
        """Queue a checkpoint folder for upload (its files are copied now)."""
        staged = self._staging / f"step-{step:09d}"
        staged.mkdir()
        for name in PUSHED_FILES:
            if (checkpoint / name).is_file():
                shutil.copy2(checkpoint / name, staged / name)
        self._queue.put((step, staged, message))

    def close(self, timeout: float | None = None) -> list[Pushed]:
        """Wait until every queued checkpoint is uploaded; return what was pushed."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
        self._thread.join(timeout)
        if not self._thread.is_alive() and not self.failed:
            shutil.rmtree(self._staging, ignore_errors=True)
        return self.pushed

    def _upload_all(self) -> None:
        while (item := self._queue.get()) is not None:
            step, staged, message = item
            for attempt in range(1, self.max_attempts + 1):  # a checkpoint is not skipped: retry, then keep it on disk
                try:
                    info = self.api.upload_folder(repo_id=self.repo_id, folder_path=staged, commit_message=message)
                    break
                except Exception as exc:
                    wait = min(60.0, self.retry_seconds * 2 ** (attempt - 1))
                    log.warning("push of step %d to %s failed (%s); attempt %d, next in %.0f s", step, self.repo_id, exc, attempt, wait)
                    time.sleep(wait)
            else:
                log.error("step %d could not be pushed to %s; its files are kept in %s", step, self.repo_id, staged)
                self.failed.append(staged)
                continue
            self.pushed.append(Pushed(step, info.oid, message))
            log.info("pushed step %d to %s@%s", step, self.repo_id, info.oid[:10])
            shutil.rmtree(staged, ignore_errors=True)


class PublishCallback(TrainerCallback):
    """Hands each saved checkpoint to a `HubPublisher`; waits for the queue when training ends."""

    def __init__(self, publisher: HubPublisher) -> None:
        self.publisher = publisher

    def on_save(self, args, state, control, **kwargs):
        logged = [entry for entry in state.log_history if "loss" in entry]
        last = logged[-1] if logged else {}
        message = commit_message(state.global_step, state.epoch, last.get("loss"), last.get("learning_rate"))
        self.publisher.submit(Path(args.output_dir) / f"checkpoint-{state.global_step}", state.global_step, message)

    def on_train_end(self, args, state, control, **kwargs):
        self.publisher.close()
