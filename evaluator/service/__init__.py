"""The service: the only place with threads. `PricerService` is the facade every door calls."""

from pricer.evaluator.service.facade import PricerService

__all__ = ["PricerService"]
