# SPDX-License-Identifier: Apache-2.0
"""Delivery bookkeeping between the watcher's signals and the work queue (issue 11, A1 and A2).

The Decider remembers, per VM, the digest of the state whose request was delivered. A signal's state
counts as delivered only once its request has left the work queue (the consumer called `forget` and
`done` with the key not added again since), or when it needs no request (the VirtualMachine does not
exist here, or is being deleted). Until then a new watcher re-signals the VM if it re-enters unchanged,
and a checkpoint written meanwhile says its request is still owed.

    ledger = DeliveryLedger(decider, queue)
    if queue.add(key):
        ledger.enqueued(key, signal)     # delivered when the queue reports the key idle
    else:
        ledger.dropped(signal)           # not delivered: the VM's next sighting signals again
    ledger.settled(signal)               # no request was needed
"""

from __future__ import annotations

from vmwatch._vmwatch import Decider, Signal
from vmwatch.queue import Key, WorkQueue

__all__ = ['DeliveryLedger']


class DeliveryLedger:
    """Which VMs' requests sit in the queue under which key, and at which state digest."""

    def __init__(self, decider: Decider, queue: WorkQueue | None = None) -> None:
        """With `queue`, the ledger hears of idle keys itself; without, its owner calls `idle` (several
        vCenters' ledgers share one queue: the Service fans its idle keys out)."""
        self.decider = decider
        self._in_queue: dict[Key, dict[str, Signal]] = {}  # key -> moref -> its latest signal
        if queue is not None:
            queue.on_idle = self.idle

    def __len__(self) -> int:
        """Keys with requests on their way (bounded by the queue's depth)."""
        return len(self._in_queue)

    def enqueued(self, key: Key, signal: Signal) -> None:
        self._in_queue.setdefault(key, {})[signal.moref] = signal

    def signals(self, key: Key) -> list[Signal]:
        """The latest signal of each VM whose request waits under `key` (what a sink may say about it)."""
        return list(self._in_queue.get(key, {}).values())

    def settled(self, signal: Signal) -> None:
        self.decider.delivered(signal.moref, signal.digest)

    def dropped(self, signal: Signal) -> None:
        self.decider.forget(signal.moref)

    def idle(self, key: Key) -> None:
        """The key left the queue: the requests waiting under it were delivered."""
        for signal in self._in_queue.pop(key, {}).values():
            self.decider.delivered(signal.moref, signal.digest)
