"""`PricerCallback`: tell a running pricer service to evaluate each checkpoint as training saves it.

Add it to any transformers / TRL trainer:

    from pricer import PricerCallback
    trainer = SFTTrainer(..., callbacks=[PricerCallback("http://pricer:8000", repo="local/my-run")])

A service that is down or slow never slows or breaks training: requests go out from a
background thread and are retried; the ones still unsent when training ends stay in the
run folder's outbox (`trainer/outbox.py`) for the next training process or `pricer watch`.
A checkpoint pushed to the Hub is named by the exact commit its push made, never by a branch
that moves on while uploads run. Only light modules are imported here: this runs in the
user's training script.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path

import httpx
from transformers import TrainerCallback

from pricer.trainer.outbox import Outbox, resolve_pushes

log = logging.getLogger(__name__)
_AGAIN = object()  # the queue's "nothing new": time to retry what is pending


class PricerCallback(TrainerCallback):
    """On each save, `POST /evaluate` the new checkpoint to a pricer service.

    Args:
        url: the service, e.g. "http://127.0.0.1:8000".
        repo: as the service names the run: "local/<output folder name>" (the default, from the
            trainer's output_dir) or the Hub repo the run pushes to; a Hub checkpoint is named by the commit
            whose message is the Trainer's "Training in progress, step N" (or "epoch N"), once the push lands.
        api_token: the service's `PRICER_API_TOKEN`, when it has one.
        stop_on_overfit: stop training once the service raises the repo's overfitting alarm (validation
            error rising for several checkpoints past the best); the best checkpoint is already saved.
        timeout: seconds per request.
        hub_token, hub_endpoint: to read a Hub repo's commits (default: the TrainingArguments' hub_token, else
            huggingface_hub's own token and HF_ENDPOINT).
        retry_seconds: how often pending requests are tried again.
    """

    def __init__(
        self,
        url: str,
        *,
        repo: str | None = None,
        api_token: str | None = None,
        stop_on_overfit: bool = False,
        timeout: float = 10.0,
        hub_token: str | None = None,
        hub_endpoint: str | None = None,
        retry_seconds: float = 5.0,
    ) -> None:
        self.url, self.repo, self.stop_on_overfit = url.rstrip("/"), repo, stop_on_overfit
        self.hub_token, self.hub_endpoint, self.retry_seconds = hub_token, hub_endpoint, retry_seconds
        self.overfitting: dict | None = None  # the service's alarm, once raised
        headers = {"Authorization": f"Bearer {api_token}"} if api_token else {}
        self._client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        self._queue: queue.Queue = queue.Queue()
        self._outbox: Outbox | None = None  # the run folder's, once training begins
        self._pending: list[dict] = []  # requests the service has not accepted yet, as the outbox holds them
        self._pushing: int | None = None  # the step whose Hub push the Trainer began last
        self._hub_api = None
        self._head: str | None = None  # the Hub repo's head when training began: later pushes are this run's
        self._unreachable = False
        self._deadline = 0.0
        self.accepted: list[dict] = []  # the service's answers
        self._thread = threading.Thread(target=self._send_all, name="pricer-callback", daemon=True)
        self._thread.start()

    def on_train_begin(self, args, state, control, **kwargs):
        self.hub_token = self.hub_token or getattr(args, "hub_token", None)
        self._outbox = Outbox(args.output_dir)
        self._queue.put(self._outbox)  # what an earlier process left unsent goes first

    def on_push_begin(self, args, state, control, **kwargs):
        self._pushing = state.global_step

    def on_save(self, args, state, control, **kwargs):
        repo = self.repo or f"local/{Path(args.output_dir).name}"
        step = state.global_step
        self._outbox = self._outbox or Outbox(args.output_dir)  # a trainer that never calls on_train_begin
        if repo.startswith("local/"):  # a local run's checkpoint is its folder
            self._queue.put({"repo": repo, "revision": f"checkpoint-{step}"})
        elif args.push_to_hub and self._pushing != step:
            log.warning("pricer: the Trainer did not push step %d to the Hub (its previous upload was still running); "
                        "set hub_always_push=True to push, and so evaluate, every checkpoint", step)
        else:  # the commit is looked up once its push has landed, by the step (or epoch) its message names
            by_step = not args.push_to_hub or args.save_strategy == "steps"
            self._queue.put({"repo": repo, "step": step} if by_step else {"repo": repo, "epoch": int(state.epoch)})
        self._stop_if_overfitting(state, control)

    def on_step_end(self, args, state, control, **kwargs):
        self._stop_if_overfitting(state, control)

    def _stop_if_overfitting(self, state, control) -> None:
        if self.stop_on_overfit and self.overfitting and not control.should_training_stop:
            log.warning("pricer: validation error is rising (%s); stopping at step %d", self.overfitting, state.global_step)
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        self.close()

    def close(self, timeout: float = 30.0) -> None:
        """Send what is pending once more, waiting up to `timeout` seconds for Hub pushes still landing; what is
        left stays in the outbox."""
        self._deadline = time.monotonic() + timeout
        self._queue.put(None)
        self._thread.join(timeout + 10)

    # ---- the sender thread

    def _send_all(self) -> None:
        while (item := self._next()) is not None:
            try:
                self._take(item)
            except Exception:  # a folder that cannot be written, say: the sender goes on with the next save
                log.exception("pricer: cannot queue %s", item)
        self._send_pending()
        while any("revision" not in b for b in self._pending) and time.monotonic() < self._deadline:  # pushes landing
            time.sleep(min(1.0, self.retry_seconds))
            self._send_pending()
        if self._pending:
            log.warning("pricer at %s did not take %d checkpoint(s); they are kept in %s for the next training run "
                        "on that folder or `pricer watch` to send", self.url, len(self._pending), self._outbox.path)

    def _take(self, item) -> None:
        if isinstance(item, Outbox):  # training began
            earlier = item.items()
            self._pending = [*earlier, *(b for b in self._pending if b not in earlier)]
            if self.repo and not self.repo.startswith("local/"):
                self._head = self._head_of(self.repo)
        elif isinstance(item, dict):  # a checkpoint was saved
            if "revision" not in item and self._head:
                item["after"] = self._head
            self._pending.append(item)
            self._outbox.add(item)  # on disk first: a crash or a service still down when training ends loses nothing
        self._send_pending()
        if isinstance(item, dict) and self.stop_on_overfit:
            self._check_overfitting(item["repo"])

    def _next(self):
        try:
            return self._queue.get(timeout=self.retry_seconds if self._pending else None)
        except queue.Empty:
            return _AGAIN

    def _send_pending(self) -> None:
        waiting = any("revision" not in b for b in self._pending)  # for a Hub push to land
        resolved = resolve_pushes(self._pending, self._hub()) if waiting else self._pending
        for body, named in zip(self._pending, resolved, strict=True):
            if named is not body:  # the push landed: whoever sends it later needs no Hub access
                self._outbox.replace(body, named)
        still = []
        for body in resolved:
            if "revision" in body and self._send(body):
                self._outbox.remove(body)
            else:
                still.append(body)  # the service down, or the push not landed yet
        self._pending = still

    def _hub(self):
        if self._hub_api is None:
            from huggingface_hub import HfApi

            self._hub_api = HfApi(endpoint=self.hub_endpoint, token=self.hub_token)
        return self._hub_api

    def _head_of(self, repo: str) -> str | None:
        try:
            return self._hub().model_info(repo).sha
        except Exception:  # no such repo yet, or the Hub unreachable: every push found is this run's
            return None

    def _check_overfitting(self, repo: str) -> None:
        try:
            response = self._client.get("/best-checkpoint", params={"repo": repo})
        except httpx.HTTPError:
            return
        if response.status_code == 200 and response.json().get("overfitting"):
            self.overfitting = response.json()["overfitting"]

    def _send(self, body: dict) -> bool:
        """Whether the service is done with `body`: it accepted it, or refused it for good."""
        try:
            response = self._client.post("/evaluate", json=body)
        except httpx.HTTPError as exc:
            return self._down(f"is unreachable ({type(exc).__name__})")
        if response.status_code >= 500:
            return self._down(f"answered {response.status_code}")
        self._unreachable = False
        if response.status_code >= 400:  # our request is wrong: retrying cannot help
            log.warning("pricer refused %s: %s", body, response.text[:200])
            return True
        self.accepted.append(response.json())
        return True

    def _down(self, why: str) -> bool:
        if not self._unreachable:  # once, not at every retry
            log.warning("pricer at %s %s; will retry every %g s", self.url, why, self.retry_seconds)
        self._unreachable = True
        return False
