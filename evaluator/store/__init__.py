"""The store: the only place that speaks SQL (SQLAlchemy 2). Evaluations with every per-item
prediction, the job queue, the watches and what was published, in one database (SQLite by default, PostgreSQL at scale)."""

from pricer.evaluator.store.deliveries import Deliveries
from pricer.evaluator.store.evaluations import Store, utcnow
from pricer.evaluator.store.jobs import MAX_ATTEMPTS, JobQueue, worker_name
from pricer.evaluator.store.watches import Watches

__all__ = ["MAX_ATTEMPTS", "Deliveries", "JobQueue", "Store", "Watches", "utcnow", "worker_name"]
