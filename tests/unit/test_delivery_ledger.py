# SPDX-License-Identifier: Apache-2.0
"""The work queue's idle hook and the DeliveryLedger: a signal counts as delivered only once its request is out."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from vmwatch.delivery import DeliveryLedger
from vmwatch.queue import Key, WorkQueue, run_workers

pytestmark = pytest.mark.anyio

K: Key = ('ns', 'vm-a')


@pytest.fixture
def anyio_backend() -> str:
    return 'asyncio'


@dataclass
class RecordingDecider:
    delivered_to: list[tuple[str, int]] = field(default_factory=list)
    forgotten: list[str] = field(default_factory=list)

    def delivered(self, moref: str, digest: int) -> None:
        self.delivered_to.append((moref, digest))

    def forget(self, moref: str) -> None:
        self.forgotten.append(moref)


@dataclass(frozen=True)
class Sig:
    moref: str
    digest: int


async def test_idle_only_after_a_successful_processing_with_nothing_added_meanwhile() -> None:
    q = WorkQueue()
    idle: list[Key] = []
    q.on_idle = idle.append
    q.add(K)
    assert await q.get() == K
    q.add(K)  # added again while processing: not idle after this done
    q.forget(K)
    q.done(K)
    assert idle == []
    assert await q.get() == K
    q.done(K)  # failed (no forget): not delivered
    assert idle == []
    q.add(K)
    assert await q.get() == K
    q.forget(K)
    q.done(K)
    assert idle == [K] and not q.holds(K)


async def test_a_failed_reconcile_is_not_delivered_until_its_retry_succeeds() -> None:
    q = WorkQueue()
    idle: list[Key] = []
    q.on_idle = idle.append
    calls = 0

    async def reconcile(key: Key) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError('the API said no')

    q.add(K)
    task = asyncio.create_task(run_workers(q, reconcile))
    while not idle:
        await asyncio.sleep(0.01)
    assert calls == 2 and idle == [K]
    await q.shutdown()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_the_ledger_records_the_latest_digest_per_vm_once_the_key_is_out() -> None:
    q = WorkQueue()
    d = RecordingDecider()
    ledger = DeliveryLedger(d, q)  # type: ignore[arg-type]
    q.add(K)
    ledger.enqueued(K, Sig('vm-1', 10))  # type: ignore[arg-type]
    ledger.enqueued(K, Sig('vm-1', 11))  # type: ignore[arg-type]
    assert await q.get() == K
    assert d.delivered_to == [] and len(ledger) == 1
    assert ledger.signals(K) == [Sig('vm-1', 11)]
    q.forget(K)
    q.done(K)
    assert d.delivered_to == [('vm-1', 11)] and len(ledger) == 0
    ledger.settled(Sig('vm-2', 5))  # type: ignore[arg-type]
    ledger.dropped(Sig('vm-3', 6))  # type: ignore[arg-type]
    assert d.delivered_to[-1] == ('vm-2', 5) and d.forgotten == ['vm-3']
