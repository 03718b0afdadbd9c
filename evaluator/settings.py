"""One settings object, read from the environment (`PRICER_*`, plus the Hub's own
`HF_TOKEN` / `HF_ENDPOINT`); explicit arguments beat the environment.

Build it with `Settings()` where it is needed (the CLI, the app factory): importing this
module reads nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pricer.evaluator.data import CATALOGUE
from pricer.evaluator.stats.metrics import Metric
from pricer.evaluator.stats.selection import EstimatorChoice, Policy, Rule

Executor = Literal["thread", "ray", "none"]


def default_home() -> Path:
    return Path(platformdirs.user_data_dir("pricer", appauthor=False))


class Settings(BaseSettings):
    """Where pricer keeps its state and how it reaches checkpoints."""

    model_config = SettingsConfigDict(env_prefix="PRICER_", extra="ignore")

    home: Path = Field(default_factory=default_home, description="pricer's data folder (store, tiny model, caches)")
    db_url: str | None = Field(default=None, description="SQLAlchemy URL of the store; default: SQLite in `home`")
    checkpoint_root: Path | None = Field(default=None, description="the only folder local runs may be read from (service)")
    data: str = Field(
        default=CATALOGUE,
        description="held-out data: a file, hf://datasets/<id>[@rev]/<file>, or 'catalogue' (the embedded default)",
    )
    device: str = Field(default="auto", description="'auto', 'cpu', 'cuda' or 'cuda:N'")
    batch_size: int = Field(default=16, ge=1, description="items per forward pass")
    load_in_4bit: bool = Field(default=False, description="load base models in 4-bit nf4, as QLoRA trains (CUDA only)")
    merge_adapters: bool = Field(
        default=True,
        description="evaluate with each adapter merged into a copy of its layers, where that is exact (not 4-bit) "
        "and fits in memory: the same prices within float rounding, fewer operations",
    )
    race: bool = Field(
        default=False,
        description="the service races each new checkpoint against the current leader: scored on growing random subsets "
        "of the validation items and stopped (kept as a partial evaluation) once significantly worse; asking for a "
        "stopped one again completes it",
    )
    base_model: str | None = Field(default=None, description="base model for every adapter; default: the one each adapter names")
    max_description_chars: int = Field(default=4000, ge=1, description="longest description /predict accepts")
    repo: str | None = Field(
        default=None, description="the repo whose best adapter /predict serves; default: the latest evaluated"
    )
    api_token: SecretStr | None = Field(
        default=None, description="when set, every route that causes work needs 'Authorization: Bearer <it>'"
    )
    predict_needs_token: bool = Field(default=False, description="POST /predict needs the API token too")
    predict_max_chars: int = Field(default=32_000, ge=1, description="characters of all descriptions in one /predict")
    base_models: list[str] = Field(
        default=["*/*"],
        description="the bases an adapter may name: Hub ids (shell patterns: 'meta-llama/*') and local folders (with "
        "everything under them); pricer's home, the checkpoint root and PRICER_BASE_MODEL are always allowed",
    )
    worker_stall_seconds: float = Field(default=1800, gt=0, description="a job with no progress this long is reported stuck")
    lease_seconds: float = Field(
        default=60, gt=0,
        description="how long a claimed job stays a worker's without a renewal (renewed every few seconds while it runs); "
        "a job whose worker vanished runs again after this",
    )
    executor: Executor = Field(
        default="thread",
        description="what runs the evaluation jobs `pricer serve` queues: 'thread' (one worker thread in the process), "
        "'ray' (a pool of Ray actors, one per GPU) or 'none' (only `pricer worker` processes elsewhere)",
    )
    ray_address: str | None = Field(default=None, description="the Ray cluster to join ('auto': the one `ray start` runs here); default: a local one")
    ray_actors: int | None = Field(default=None, ge=1, description="Ray actors evaluating; default: one per GPU of the cluster, else one")
    ray_gpus_per_actor: float | None = Field(default=None, ge=0, description="GPUs each actor holds; default: 1 where the cluster has GPUs, else 0")
    ray_cpus_per_actor: float = Field(default=1, ge=0, description="CPUs each actor holds")
    refresh_seconds: float = Field(
        default=2.0, gt=0, description="how often a replica looks for results other processes stored, to serve a new choice"
    )
    host: str = Field(default="127.0.0.1", description="address `pricer serve` listens on")
    port: int = Field(default=8000, ge=0, le=65535, description="port `pricer serve` listens on")
    test_share: float = Field(default=0.5, ge=0, lt=1, description="share of held-out items kept for the test part")
    metric: Metric = Field(default=Metric.MAE, description="what chooses the checkpoint")
    rule: Rule = Field(default=Rule.MIN, description="how the checkpoint is chosen: min, curve or earliest")
    estimator: EstimatorChoice = Field(
        default=EstimatorChoice.ARGMAX,
        description="which price is read from the model: argmax, mean, median, log, hit, or auto (chosen on validation)",
    )
    confidence: float = Field(default=0.95, gt=0, lt=1, description="of the paired intervals behind 'significantly worse'")
    overfit_patience: int = Field(default=3, ge=1, description="rising checkpoints past the best that raise the alarm")
    watch_interval: float = Field(default=30.0, gt=0, description="seconds between polls of a watched repo")
    webhook_secret: SecretStr | None = Field(default=None, description="X-Webhook-Secret that POST /webhooks/hub must carry")
    predict_max_batch: int = Field(default=32, ge=1, description="descriptions priced together in one pass; 1: no micro-batching")
    predict_max_wait_ms: float = Field(default=5.0, ge=0, description="how long a prediction waits for others to join it")
    publish_hub: bool = Field(
        default=False,
        description="move a tag (hub_tag) to each Hub repo's chosen commit and write the choice and its evidence into the "
        "repo's model card; needs a token that can write to the repo",
    )
    hub_tag: str = Field(default="pricer-best", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$", description="the tag publish_hub moves")
    run_card: bool = Field(
        default=False,
        description="the service writes each local run's choice into the run's folder: its model card (README.md) and "
        "pricer-choice.json (`pricer publish` always does)",
    )
    mlflow_tracking_uri: str | None = Field(
        default=None, description="log every evaluation and the choice to this MLflow tracking URI (pricer[mlflow])"
    )
    mlflow_experiment: str = Field(default="pricer", description="the MLflow experiment pricer's runs go to")
    wandb_project: str | None = Field(
        default=None, description="log every evaluation and the choice to this W&B project (pricer[wandb]; WANDB_MODE applies)"
    )
    wandb_entity: str | None = Field(default=None, description="the W&B entity (team or user) of the project")
    champion_alias: str = Field(
        default="champion", description="the alias the chosen adapter gets in MLflow's model registry and W&B's artifacts"
    )
    hf_token: SecretStr | None = Field(default=None, validation_alias=AliasChoices("HF_TOKEN", "PRICER_HF_TOKEN"))
    hf_endpoint: str | None = Field(default=None, validation_alias=AliasChoices("HF_ENDPOINT", "PRICER_HF_ENDPOINT"))

    @field_validator("api_token", "webhook_secret", "hf_token", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value  # `PRICER_API_TOKEN=` must not be a token that an empty header matches

    @property
    def store_url(self) -> str:
        return self.db_url or f"sqlite:///{self.home / 'pricer.db'}"

    @property
    def policy(self) -> Policy:
        """How checkpoints are chosen, for every door: the served adapter, the API, the dashboard, the CLI."""
        return Policy(self.metric, self.rule, self.estimator, self.confidence, self.overfit_patience)

    @property
    def token(self) -> str | None:
        return self.hf_token.get_secret_value() if self.hf_token else None

    def redact(self, text: str) -> str:
        """What a caller may see of a message: the checkpoint root, pricer's home and the Hub's address by name."""
        folders = [(self.checkpoint_root, "local"), (self.home, "<pricer home>")]
        spellings = [(str(p), name) for where, name in folders if where for p in {where, where.expanduser().resolve()}]
        if self.hf_endpoint:
            spellings.append((self.hf_endpoint.rstrip("/"), "<hub>"))
        for spelled, name in sorted(spellings, key=lambda pair: -len(pair[0])):  # the longest first: a root inside home
            text = text.replace(spelled.rstrip("/"), name)
        return text
