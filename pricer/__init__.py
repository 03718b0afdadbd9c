"""pricer: pick the best LoRA checkpoint of a fine-tuned LLM price predictor, out of sample.

The repository's folders install under this one name: `pricer.evaluator` (the core, the
service, the CLI), `pricer.app` (HTTP) and `pricer.trainer` (fine-tuning). The names a
user's script needs are here, imported on first use so that `import pricer` stays light:

    from pricer import PricerCallback
    trainer = SFTTrainer(..., callbacks=[PricerCallback("http://127.0.0.1:8000", repo="local/my-run")])
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_PUBLIC = {
    "PricerCallback": "pricer.trainer.callback",
    "train": "pricer.trainer.train",
    "preset": "pricer.trainer.config",
    "Evaluator": "pricer.evaluator.evaluate",
    "PricerService": "pricer.evaluator.service",
    "Settings": "pricer.evaluator.settings",
    "Policy": "pricer.evaluator.stats.selection",
    "load_heldout": "pricer.evaluator.data",
}
__all__ = ["Evaluator", "Policy", "PricerCallback", "PricerService", "Settings", "load_heldout", "preset", "train"]

if TYPE_CHECKING:
    from pricer.evaluator.data import load_heldout
    from pricer.evaluator.evaluate import Evaluator
    from pricer.evaluator.service import PricerService
    from pricer.evaluator.settings import Settings
    from pricer.evaluator.stats.selection import Policy
    from pricer.trainer.callback import PricerCallback
    from pricer.trainer.config import preset
    from pricer.trainer.train import train


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'pricer' has no attribute {name!r}")
    return getattr(import_module(_PUBLIC[name]), name)
