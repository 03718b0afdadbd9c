"""MLflow: every evaluation of a run logged to one MLflow run, and the chosen adapter registered under an alias.

`PRICER_MLFLOW_TRACKING_URI` (a tracking server, `sqlite:///mlflow.db`, or a folder) turns it on; the run lives in
the experiment `PRICER_MLFLOW_EXPERIMENT` (`pricer`), tagged `pricer.repo` and found again by `pricer.key` (the repo
and its held-out set), so every process writes to the same run. Each checkpoint's validation figures go at its step
(`tracking`'s names) and its per-item predictions to `predictions/<revision>-<commit>.json` (a table). The
choice: the chosen adapter's files are logged to `adapters/<revision>-<commit>/` and registered as a version of the
model named after the repo (`org/run` -> `org-run`; one version per chosen commit), tagged with the commit and its
figures; the alias (`PRICER_CHAMPION_ALIAS`, `champion`) is moved to it, so `models:/org-run@champion` loads the
choice. The run's `chosen/*` and `test/*` metrics (logged at step 0, newest last) are what `search_runs` shows for it,
and `pricer-results.json` is the results record.

The client is always explicit (`MlflowClient`): nothing here touches mlflow's global active run, so the service's
threads, and a user's own `mlflow.start_run` in the same process, never see each other's runs.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pricer.evaluator.errors import PublishFailed
from pricer.evaluator.exports import prediction_rows
from pricer.evaluator.publishing import tracking

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

    from pricer.evaluator.checkpoints.sources import CheckpointSource
    from pricer.evaluator.publishing import Run
    from pricer.evaluator.records import Evaluation
    from pricer.evaluator.settings import Settings

log = logging.getLogger(__name__)
KEY_TAG = "pricer.key"


def _millis() -> int:
    return int(time.time() * 1000)


class MlflowPublisher:
    """Logs a run's evaluations and its choice to MLflow (see the module's docstring)."""

    name = "mlflow"
    records_evaluations = True

    def __init__(self, settings: Settings) -> None:
        tracking.require("mlflow", setting="PRICER_MLFLOW_TRACKING_URI")
        from mlflow import MlflowClient

        self._client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
        self._experiment = settings.mlflow_experiment
        self._alias = settings.champion_alias
        self._lock = threading.Lock()  # two threads of one process never create two tracker runs for one pricer run

    def accepts(self, source: CheckpointSource) -> bool:
        return True

    def evaluated(self, run: Run, evaluation: Evaluation) -> None:
        """One checkpoint's validation figures at its step, and its per-item predictions as a table (the JSON of
        `pandas.read_json(path, orient="split")`, as `mlflow.log_table` writes, without its run tag that grows with
        every table). Its points carry the evaluation's time, so one logged again is the same point."""
        from mlflow.entities import Metric

        run_id = self._tracker_run(run)
        when, step = int(evaluation.created_at.timestamp() * 1000), tracking.step(evaluation)
        figures = tracking.checkpoint_figures(run, evaluation)
        self._client.log_batch(run_id, metrics=[Metric(key, value, when, step) for key, value in figures.items()])
        with tempfile.TemporaryDirectory() as folder:  # a file of its own, replaced if this is tried again
            table = Path(folder) / f"{tracking.checkpoint_name(evaluation)}.json"
            prediction_rows(evaluation, run.data).to_json(table, orient="split", index=False)
            self._client.log_artifact(run_id, str(table), "predictions")
        self._client.set_terminated(run_id, "FINISHED")

    def chose(self, run: Run) -> None:
        """Register the chosen adapter (once per commit), move the alias to it, and log the choice's figures."""
        from mlflow.entities import Metric, RunTag

        run_id = self._tracker_run(run)
        model = tracking.slug(run.repo)
        version = self._version(run, model, run_id)
        for key, value in self._version_tags(run).items():  # the evidence as it is now (a choice published again)
            self._client.set_model_version_tag(model, version.version, key, value)
        self._client.set_registered_model_alias(model, self._alias, version.version)
        now = _millis()  # at step 0, the newest timestamp is the latest value: the summary shows this choice
        metrics = [Metric(key, value, now, 0) for key, value in tracking.choice_figures(run).items()]
        tags = [RunTag(f"pricer.chosen.{key}", value) for key, value in tracking.choice_tags(run).items()]
        self._client.log_batch(run_id, metrics=metrics, tags=[*tags, RunTag("pricer.model_version", f"{model}/{version.version}")])
        self._client.log_dict(run_id, run.record, "pricer-results.json")
        self._client.set_terminated(run_id, "FINISHED")
        log.info("%s: MLflow model %s version %s is now @%s", run.repo, model, version.version, self._alias)

    # ---- the tracker run, the experiment, the registered version

    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        experiment = self._client.get_experiment_by_name(self._experiment)
        if experiment is None:
            try:
                return self._client.create_experiment(self._experiment)
            except MlflowException as exc:  # another process created it meanwhile
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                experiment = self._client.get_experiment_by_name(self._experiment)
        if experiment is None or experiment.lifecycle_stage != "active":
            raise PublishFailed(f"the MLflow experiment {self._experiment!r} is deleted: restore it, or set PRICER_MLFLOW_EXPERIMENT")
        return experiment.experiment_id

    def _tracker_run(self, run: Run) -> str:
        """The MLflow run of this pricer run (the oldest, if two processes ever created one each), created if none."""
        experiment, key = self._experiment_id(), tracking.run_key(run)
        with self._lock:
            found = self._client.search_runs(
                [experiment], filter_string=f"tags.`{KEY_TAG}` = '{key}'", max_results=1, order_by=["attributes.start_time ASC"]
            )
            return found[0].info.run_id if found else self._create_run(run, experiment, key)

    def _create_run(self, run: Run, experiment: str, key: str) -> str:
        from mlflow.entities import Param

        tags = {KEY_TAG: key, "pricer.repo": run.repo, "pricer.data": run.data.name, "pricer.data_fingerprint": run.data.fingerprint}
        created = self._client.create_run(experiment, run_name=run.repo, tags=tags)
        config = tracking.run_config(run)
        base, data = config["base"] or {}, config["data"] or {}
        params = {"repo": run.repo, "base_model": base.get("name"), "data": data.get("name"),
                  "data_fingerprint": data.get("fingerprint"), "items": data.get("items"),
                  "validation_items": data.get("validation"), "test_items": data.get("test")}
        params |= {f"config.{key}": value for key, value in (config["config"] or {}).items()}
        self._client.log_batch(created.info.run_id, params=[Param(k, str(v)) for k, v in params.items() if v is not None])
        return created.info.run_id

    def _version(self, run: Run, model: str, run_id: str) -> ModelVersion:
        """The registered version of the chosen commit from this run: found, or its adapter logged and registered."""
        from mlflow.exceptions import MlflowException

        try:
            description = f"The adapter pricer chose for {run.repo}; the alias {self._alias!r} names the current choice."
            self._client.create_registered_model(model, tags={"pricer.repo": run.repo}, description=description)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        commit = run.choice.chosen.evaluation.revision.commit
        for version in self._client.search_model_versions(f"name = '{model}'"):
            if version.run_id == run_id and version.tags.get("pricer.commit") == commit:
                return version
        path = f"adapters/{tracking.checkpoint_name(run.choice.chosen.evaluation)}"
        files = tracking.adapter_files(run)
        for file in files:
            self._client.log_artifact(run_id, str(file), path)
        return self._client.create_model_version(
            model, source=f"runs:/{run_id}/{path}", run_id=run_id, tags=self._version_tags(run), description=run.choice.statement
        )

    def _version_tags(self, run: Run) -> dict[str, str]:
        tags = {f"pricer.{key}": value for key, value in tracking.choice_tags(run).items()}
        figures = tracking.choice_figures(run)
        return tags | {key.replace("/", "_"): f"{value:.6g}" for key, value in figures.items() if not key.endswith(("_low", "_high"))}
