"""The typed errors of pricer's core, grouped by domain.

Every error a user can cause is a `PricerError`; the CLI prints its message and exits
non-zero, and the HTTP layer maps each class to one status code in one place. Classes
also inherit the stdlib type a caller would expect (`LookupError`, `ValueError`).
"""

from __future__ import annotations


class PricerError(Exception):
    """Base of every error pricer raises on purpose."""


# CHECKPOINT SOURCE ERRORS


class InvalidRepoId(PricerError, ValueError):
    """The repo is neither a local run folder nor a well-formed `namespace/name` Hub id."""


class RepoNotFound(PricerError, LookupError):
    """The Hub repo or local run folder does not exist (or is not visible with this token)."""


class RevisionNotFound(PricerError, LookupError):
    """The revision (commit sha, branch, tag or `checkpoint-N` folder) does not exist."""


class HubUnavailable(PricerError, ConnectionError):
    """The Hub (or `HF_ENDPOINT`) could not be reached or answered with a server error."""


# ADAPTER ERRORS


class InvalidAdapter(PricerError, ValueError):
    """The revision holds no usable LoRA adapter (missing or corrupt files)."""


class PickledWeightsRefused(InvalidAdapter):
    """The adapter ships only pickled weights (`adapter_model.bin`); pricer loads safetensors only."""


class IncompatibleAdapter(InvalidAdapter):
    """The adapter does not fit the loaded base model (another base, other shapes or modules)."""


# DATA ERRORS


class InvalidDataset(PricerError, ValueError):
    """A held-out data file is missing, unreadable, empty, or lacks valid prices or prompts."""


# MODEL AND STORE ERRORS


class ModelLoadError(PricerError, RuntimeError):
    """The base model or its tokenizer could not be loaded."""


class StoreUnavailable(PricerError, RuntimeError):
    """The store cannot be written or reached (a full disk, a database that is down)."""


class NotEvaluated(PricerError, LookupError):
    """Nothing is evaluated yet for the asked repo (and dataset)."""


class InvalidPredictionInput(PricerError, ValueError):
    """A description to price is empty or too long."""


class DatasetNotFound(PricerError, LookupError):
    """No held-out set of that name is configured."""


class InvalidRequest(PricerError, ValueError):
    """Options that cannot go together (racing under the `auto` estimator)."""


# SERVICE ERRORS


class JobNotFound(PricerError, LookupError):
    """No evaluation job has that id."""


class ModelNotReady(PricerError, RuntimeError):
    """No adapter can answer yet: nothing is evaluated, or the model is still loading."""


# TRAINING ERRORS


class RunFolderInUse(PricerError, FileExistsError):
    """The training output folder holds another run (or this run's checkpoints, without --resume)."""


class InvalidTrainingConfig(PricerError, ValueError):
    """A training setting is out of range or unknown."""


class WatchNotFound(PricerError, LookupError):
    """The repo is not watched."""


class PublishFailed(PricerError, RuntimeError):
    """A publishing target (the Hub, MLflow, W&B, the run folder) refused the choice, or none is turned on."""
