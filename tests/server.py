"""A real `pricer serve` process on loopback, for the service's integration tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.waiting import until

API_TOKEN = "s3cret-token-for-tests"


def validation_size(path: str | Path | None) -> int:
    """How many items of a held-out file (None: the catalogue's) are validation items: what metrics count."""
    from pricer.evaluator.data import load_heldout

    return int((~load_heldout(path).test).sum())


def write_items(path: Path, frame) -> Path:
    """Catalogue rows as a held-out JSONL file."""
    frame[["title", "details", "price"]].to_json(path, orient="records", lines=True)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """`pricer serve` in a subprocess with the given environment; `client` talks to it."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = {**os.environ, **env}
        self.log = log
        self.port = free_port()
        self.command = ["serve", "--port", str(self.port)]  # the `pricer` subcommand that serves
        self.process: subprocess.Popen | None = None
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30)

    def start(self, timeout: float = 60) -> ServerProcess:
        command = [sys.executable, "-m", "pricer.evaluator.cli.main", "-v", *self.command]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if self.client.get("/health").status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"the server did not answer in {timeout} s:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs, as when a machine or an OOM killer stops it."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def wait_for(self, job_id: int, statuses: tuple[str, ...] = ("done", "failed"), timeout: float = 120) -> dict:
        def finished() -> dict | None:
            job = self.client.get(f"/evaluations/{job_id}").json()
            return job if job["status"] in statuses else None

        return until(finished, f"job {job_id} to finish", timeout=timeout)

    def wait_served(self, commit: str, timeout: float = 60) -> None:
        """Until /health names `commit` as the served adapter."""
        until(lambda: (self.client.get("/health").json()["served"] or {}).get("commit") == commit, f"{commit} to be served", timeout=timeout)

    def __enter__(self) -> ServerProcess:
        return self if self.process is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.client.close()


class WorkerProcess:
    """`pricer worker` in a subprocess: it runs the jobs of the store its environment names."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = {**os.environ, **env}, log
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> WorkerProcess:
        command = [sys.executable, "-m", "pricer.evaluator.cli.main", "-v", "worker", "--threads", "1"]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        until(lambda: "evaluating the jobs queued" in self.log.read_text() or self.process.poll() is not None,
              "the worker to start", timeout=timeout)
        if self.process.poll() is not None:
            raise RuntimeError(f"the worker exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
        return self

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a frozen one must be able to hear the next
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
