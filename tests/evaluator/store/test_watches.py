"""Watches in the store: a due poll is taken by one replica, and the next is due one interval later."""

import threading
from datetime import timedelta

from pricer.evaluator.store import Store, Watches, utcnow


def test_a_due_poll_is_taken_by_exactly_one_of_the_replicas_asking_at_once(store_url):
    Watches(Store(store_url)).add("org/run", interval=30)
    replicas = [Watches(Store(store_url)) for _ in range(4)]
    taken: list[list[str]] = []
    ready = threading.Barrier(len(replicas))

    def poll(watches: Watches) -> None:
        ready.wait()
        taken.append([watch.repo for watch in watches.take_due(lease=60)])

    threads = [threading.Thread(target=poll, args=(watches,)) for watches in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(taken, key=len) == [[], [], [], ["org/run"]]
    assert replicas[0].take_due(lease=60) == []  # held while the poll runs


def test_after_a_poll_the_next_is_due_one_interval_on_and_a_new_interval_makes_it_due_now(store_url):
    watches = Watches(Store(store_url))
    watches.add("org/run", interval=30)
    (watch,) = watches.take_due(lease=60)
    watches.polled("org/run", checkpoints=3)
    polled = watches.get("org/run")
    assert polled.checkpoints == 3 and polled.next_poll - polled.last_polled == timedelta(seconds=30)
    assert watches.take_due(lease=60) == [] and polled.next_poll > utcnow()
    watches.add("org/run", interval=5)
    assert [w.repo for w in watches.take_due(lease=60)] == ["org/run"]
