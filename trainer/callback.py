"""`PricerCallback`: tell a running pricer service to evaluate each checkpoint as training saves it.

Add it to any transformers / TRL trainer:

    from pricer.trainer import PricerCallback
    trainer = SFTTrainer(..., callbacks=[PricerCallback("http://pricer:8000", repo="local/my-run")])

A service that is down or slow never slows or breaks training: requests go out from a
background thread, and the ones that fail are sent again at the next save and at the end.
"""

from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path

import httpx
from transformers import TrainerCallback

log = logging.getLogger(__name__)


class PricerCallback(TrainerCallback):
    """On each save, `POST /evaluate` the new checkpoint to a pricer service.

    Args:
        url: the service, e.g. "http://127.0.0.1:8000".
        repo: as the service names the run: "local/<output folder name>" (the default, from the
            trainer's output_dir) or the Hub repo the run pushes to.
        api_token: the service's `PRICER_API_TOKEN`, when it has one.
        stop_on_overfit: stop training once the service raises the repo's overfitting alarm (validation
            error rising for several checkpoints past the best); the best checkpoint is already saved.
        timeout: seconds per request.
    """

    def __init__(
        self,
        url: str,
        *,
        repo: str | None = None,
        api_token: str | None = None,
        stop_on_overfit: bool = False,
        timeout: float = 10.0,
    ) -> None:
        self.url, self.repo, self.stop_on_overfit = url.rstrip("/"), repo, stop_on_overfit
        self.overfitting: dict | None = None  # the service's alarm, once raised
        headers = {"Authorization": f"Bearer {api_token}"} if api_token else {}
        self._client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        self._outbox: queue.Queue[dict | None] = queue.Queue()
        self._pending: list[dict] = []  # requests the service has not accepted yet
        self.accepted: list[dict] = []  # the service's answers
        self._thread = threading.Thread(target=self._send_all, name="pricer-callback", daemon=True)
        self._thread.start()

    def on_save(self, args, state, control, **kwargs):
        repo = self.repo or f"local/{Path(args.output_dir).name}"
        # a local run's checkpoint is its folder; a Hub run's newest checkpoint is the head of main
        revision = f"checkpoint-{state.global_step}" if repo.startswith("local/") else None
        self._outbox.put({"repo": repo, "revision": revision})
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
        """Send what is still pending once more, then stop the sender."""
        self._outbox.put(None)
        self._thread.join(timeout)

    def _send_all(self) -> None:
        while True:
            body = self._outbox.get()
            if body is not None:
                self._pending.append(body)
            self._pending = [b for b in self._pending if not self._send(b)]  # retry earlier failures too
            if body is not None and self.stop_on_overfit:
                self._check_overfitting(body["repo"])
            if body is None:
                if self._pending:
                    log.warning("pricer at %s did not take %d checkpoint(s); evaluate them later", self.url, len(self._pending))
                return

    def _check_overfitting(self, repo: str) -> None:
        try:
            response = self._client.get("/best-checkpoint", params={"repo": repo})
        except httpx.HTTPError:
            return
        if response.status_code == 200 and response.json().get("overfitting"):
            self.overfitting = response.json()["overfitting"]

    def _send(self, body: dict) -> bool:
        try:
            response = self._client.post("/evaluate", json={k: v for k, v in body.items() if v is not None})
        except httpx.HTTPError as exc:
            log.warning("pricer at %s is unreachable (%s); will retry", self.url, type(exc).__name__)
            return False
        if response.status_code >= 500:
            log.warning("pricer at %s answered %d; will retry", self.url, response.status_code)
            return False
        if response.status_code >= 400:  # our request is wrong: retrying cannot help
            log.warning("pricer refused %s: %s", body, response.text[:200])
            return True
        self.accepted.append(response.json())
        return True
