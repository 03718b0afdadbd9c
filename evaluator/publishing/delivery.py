"""Delivery: each publisher told what it has not been told of a run, once across every process on the store."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from pricer.evaluator.publishing import Publisher, Run
from pricer.evaluator.store import Deliveries

log = logging.getLogger(__name__)
CHOICE = "choice"


@dataclass
class Delivered:
    """What one `deliver` did: `sent` names each delivery made ("mlflow: checkpoint-800 evaluated"), `failed` each
    target that refused, with why (its claims are released, so the next round tries again)."""

    sent: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def deliver(run: Run, publishers: list[Publisher], deliveries: Deliveries, *, worker: str, again: bool = False) -> Delivered:
    """Tell each publisher (each one that accepts the run: the caller's choice) of its evaluations not yet delivered,
    then of the choice when it, or the evaluations behind it, are not the ones delivered (`again`: even so)."""
    done = Delivered()
    chosen = run.choice.chosen.evaluation.revision
    evidence = f"{chosen.commit} of {len(run.evaluations)}"  # a new evaluation may leave the choice and change its ranking
    for publisher in publishers:
        claimed = None
        try:
            for evaluation in run.evaluations if publisher.records_evaluations else ():
                claimed = f"evaluation:{evaluation.id}"
                if deliveries.claim(publisher.name, run.source.name, claimed, evaluation.revision.commit, worker):
                    publisher.evaluated(run, evaluation)
                    deliveries.delivered(publisher.name, run.source.name, claimed, worker)
                    done.sent.append(f"{publisher.name}: {evaluation.revision.revision} evaluated")
            claimed = CHOICE
            if deliveries.claim(publisher.name, run.source.name, CHOICE, evidence, worker, again=again):
                publisher.chose(run)
                deliveries.delivered(publisher.name, run.source.name, CHOICE, worker)
                done.sent.append(f"{publisher.name}: {chosen.revision} chosen")
        except Exception as exc:  # a target that is down or refuses must not stop the others, nor the service
            deliveries.release(publisher.name, run.source.name, claimed, worker)
            done.failed[publisher.name] = f"{type(exc).__name__}: {exc}"
            log.warning("%s: publishing to %s failed, to be tried again: %s", run.repo, publisher.name, done.failed[publisher.name])
    return done
