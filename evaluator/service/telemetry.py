"""The service's Prometheus metrics, in a registry of its own (so two services in one process never mix).

Counters and histograms are updated where the work happens; job counts and the served
revisions are read from the service when Prometheus scrapes, so they are never stale.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from pricer.evaluator.checkpoints.sources import Revision

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Snapshot(Collector):
    def __init__(self, job_counts: Callable[[], dict[str, int]], served: Callable[[], Iterable[tuple[str, Revision]]]) -> None:
        self.job_counts, self.served = job_counts, served

    def collect(self):
        jobs = GaugeMetricFamily("pricer_jobs", "Evaluation jobs by status", labels=["status"])
        for status, count in self.job_counts().items():
            jobs.add_metric([status], count)
        yield jobs
        served = InfoMetricFamily("pricer_served", "The checkpoint /predict answers with, per repo")
        for repo, revision in self.served():
            served.add_metric([], {"repo": repo, "revision": revision.revision, "commit": revision.commit})
        yield served


class Telemetry:
    """What `GET /metrics` shows."""

    def __init__(self, job_counts: Callable[[], dict[str, int]], served: Callable[[], Iterable[tuple[str, Revision]]]) -> None:
        self.registry = CollectorRegistry()
        self.items_scored = Counter("pricer_items_scored", "Held-out items priced by evaluation jobs", registry=self.registry)
        self.evaluation_seconds = Histogram(
            "pricer_evaluation_seconds",
            "Wall time of evaluation jobs that ran (fetch, adapter load, pricing, storing)",
            buckets=(1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
            registry=self.registry,
        )
        self.prediction_seconds = Histogram(
            "pricer_prediction_seconds",
            "Latency of predictions, from the request reaching the service to its prices (batching wait included)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.registry.register(_Snapshot(job_counts, served))

    def render(self) -> bytes:
        return generate_latest(self.registry)
