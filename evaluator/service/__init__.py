"""The service: the only place with long-running threads. `PricerService` is the facade every door calls."""

from pricer.evaluator.service.facade import PricerService, RunRacing, ServedPrediction
from pricer.evaluator.service.serving import Served
from pricer.evaluator.service.telemetry import CONTENT_TYPE as PROMETHEUS_CONTENT_TYPE

__all__ = ["PROMETHEUS_CONTENT_TYPE", "PricerService", "RunRacing", "Served", "ServedPrediction"]
