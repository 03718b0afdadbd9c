"""Shared fixtures: a tiny real base model, real LoRA checkpoint runs, an isolated store."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pricer.evaluator.data import catalogue_split, heldout_from_frame  # noqa: E402
from pricer.evaluator.embedded.tiny import make_tiny_base  # noqa: E402
from pricer.evaluator.settings import Settings  # noqa: E402
from pricer.trainer import preset, train  # noqa: E402
from tests.hubserver import hub_server  # noqa: E402,F401  (a fixture)
from tests.server import API_TOKEN, ServerProcess, write_items  # noqa: E402


def _real_data() -> Path:
    """The workplace's real items: `PRICER_REAL_DATA`, else `shared/data/pricer` beside a parent of the checkout."""
    if os.environ.get("PRICER_REAL_DATA"):
        return Path(os.environ["PRICER_REAL_DATA"])
    here = Path(__file__).resolve()
    candidates = [parent / "shared" / "data" / "pricer" for parent in here.parents] + [Path("/work/shared/data/pricer")]
    return next((c for c in candidates if c.is_dir()), candidates[0])


REAL_DATA = _real_data()


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the user's pricer folder, Hub cache or token; adapters may name bases on the
    Hub and under the session's temporary folder (where the tiny base is built)."""
    monkeypatch.setenv("PRICER_HOME", str(tmp_path / "pricer-home"))
    monkeypatch.setenv("PRICER_BASE_MODELS", json.dumps(["*/*", str(tmp_path_factory.getbasetemp())]))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    for name in ("PRICER_DB_URL", "HF_TOKEN", "HF_ENDPOINT", "PRICER_BASE_MODEL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "pricer-home", batch_size=8)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_base(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="session")
def catalogue_heldout():
    return heldout_from_frame(catalogue_split()[1].iloc[:64], name="catalogue-64")


@pytest.fixture(scope="session")
def tiny_run(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real LoRA run on the tiny model: checkpoint-10, -20, -30."""
    items = heldout_from_frame(catalogue_split()[0].iloc[:240], name="train")
    return train(tiny_base, items, tmp_path_factory.mktemp("runs") / "tiny-run", preset("tiny", max_steps=30, save_steps=10)).output


@pytest.fixture(scope="session")
def broken_run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny run's three checkpoints and a fourth, checkpoint-40, whose LoRA weights are scaled up 30 times:
    a checkpoint that prices far worse than every other, which full evaluation never chooses."""
    import shutil

    from safetensors.torch import load_file, save_file

    folder = tmp_path_factory.mktemp("runs") / "broken-run"
    for name in ("checkpoint-10", "checkpoint-20", "checkpoint-30"):
        shutil.copytree(tiny_run / name, folder / name)
    shutil.copytree(tiny_run / "checkpoint-30", folder / "checkpoint-40")
    weights = folder / "checkpoint-40" / "adapter_model.safetensors"
    save_file({k: v * 30 for k, v in load_file(weights).items()}, weights)
    return folder


@pytest.fixture
def make_server(tmp_path: Path, tiny_run: Path):
    """Start `pricer serve` over the tiny run's folder; every server made is stopped at the end."""
    servers: list[ServerProcess] = []
    items = write_items(tmp_path / "heldout.jsonl", catalogue_split()[1].iloc[:48])

    def make(**env: str) -> ServerProcess:
        base = {
            "PRICER_HOME": str(tmp_path / "home"),
            "PRICER_DB_URL": f"sqlite:///{tmp_path / 'service.db'}",
            "PRICER_CHECKPOINT_ROOT": str(tiny_run.parent),
            "PRICER_DATA": str(items),
            "PRICER_API_TOKEN": API_TOKEN,
            "PRICER_DEVICE": "cpu",
            "PRICER_BATCH_SIZE": "16",
        }
        server = ServerProcess({**base, **env}, tmp_path / f"server-{len(servers)}.log")
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


POSTGRES = os.environ.get("PRICER_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture
def postgres_url() -> str:
    """A fresh, empty PostgreSQL database on the machine's server (`PRICER_TEST_POSTGRES` names the server and a
    database to connect to first), dropped after the test. No server is a failure, not a skip: CI provides one."""
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    server = make_url(POSTGRES)
    name = f"pricer_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    yield server.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
