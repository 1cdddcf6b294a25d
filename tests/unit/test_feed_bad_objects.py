# SPDX-License-Identifier: Apache-2.0
"""Issue 11 A3/A6/B1/B2 without servers: bad objects in the feeds, the keyed task runner, and readiness.

The same behaviours run against the real servers in tests/reliability/test_feed_faults.py.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass
from typing import Any, cast

import pytest
from kubernetes import client

from vmwatch._vmwatch import Signal
from vmwatch.kube.index import VirtualMachineIndex
from vmwatch.kube.listwatch import BadObjects
from vmwatch.kube.priority import PRIORITY_ANNOTATION, PRIORITY_MAX, PRIORITY_MIN, priority_problem, vm_priority
from vmwatch.kube.zones import ZoneCache
from vmwatch.queue import KeyedTasks, WorkQueue
from vmwatch.service import Service
from vmwatch.settings import ServiceSettings

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return 'asyncio'


def vm(name: str, **fields: Any) -> dict[str, Any]:
    return {'apiVersion': 'vmoperator.vmware.com/v1alpha6', 'kind': 'VirtualMachine',
            'metadata': {'namespace': 'ns', 'name': name, 'resourceVersion': '5'}, **fields}  # fmt: skip


def annotated(value: Any) -> dict[str, Any]:
    obj = vm('a')
    obj['metadata']['annotations'] = {PRIORITY_ANNOTATION: value}
    return obj


@pytest.mark.parametrize(
    'value, priority, problem',
    [
        ('3000000000', PRIORITY_MAX, 'priority_out_of_range'),
        ('-3000000000', PRIORITY_MIN, 'priority_out_of_range'),
        ('9223372036854775807', PRIORITY_MAX, 'priority_out_of_range'),  # int64 max: still an Atoi
        ('2147483647', PRIORITY_MAX, None),
        ('-0000000000000000000000042', -42, None),  # leading zeros do not count towards the length
        ('9223372036854775808', 1, 'bad_priority'),  # beyond int64: Atoi fails, the annotation is ignored
        ('9' * 5000, 1, 'bad_priority'),  # past Python's int() digit limit: refused before int()
        ('abc', 1, 'bad_priority'),
        (42, 1, 'bad_priority'),  # not a string
        ('', 1, None),  # empty: no value, nothing to report
    ],
)
def test_priority_annotation_is_clamped_or_ignored_and_named(value: Any, priority: int, problem: str | None) -> None:
    obj = annotated(value)
    obj['status'] = {'conditions': [{'type': 'VirtualMachineCreated', 'status': 'True'}]}
    obj['spec'] = {'promoteDisksMode': 'Disabled'}
    assert vm_priority(obj) == priority
    assert priority_problem(obj) == problem


def test_bad_vms_are_indexed_with_defaults_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    index = VirtualMachineIndex(None)
    seen: list[str] = []
    index.bad_objects.on_bad = seen.append
    items = [
        annotated('3000000000'),
        vm('status-str', status='a string'),
        vm('uid-int', status={'uniqueID': 42}),
        vm('cond', status={'uniqueID': 'vm-c', 'conditions': 'garbage'}),
        {**vm('ann-list'), 'metadata': {'namespace': 'ns', 'name': 'ann-list', 'annotations': ['x']}},
        {'metadata': {'name': 'no-namespace'}},
        {'metadata': 'not a map'},
        cast(dict[str, Any], 'not even an object'),
        vm('good', status={'uniqueID': 'vm-good'}),
    ]
    index.apply_list(items, '7')
    assert index.synced
    assert sorted(index.index.keys()) == [('ns', n) for n in ('a', 'ann-list', 'cond', 'good', 'status-str', 'uid-int')]
    assert index.get('ns', 'a') == ('', False, PRIORITY_MAX)
    assert index.get('ns', 'uid-int') == ('', False, 100)  # no uniqueID, not created: the creating bucket
    assert index.get('ns', 'cond')[0] == 'vm-c'  # type: ignore[index]
    assert index.by_unique_id('vm-good') == ('ns', 'good')
    assert sorted(set(seen)) == [
        'bad_annotations', 'bad_conditions', 'bad_status', 'bad_unique_id', 'no_name', 'priority_out_of_range'
    ]  # fmt: skip
    index.apply_event({'type': 'MODIFIED', 'object': annotated('3000000001')})  # the same object again
    assert index.bad_objects.counts['priority_out_of_range'] == 2
    logged = [r.getMessage() for r in caplog.records if 'ns/a:' in r.getMessage()]
    assert len(logged) == 1 and 'clamped' in logged[0], logged


def test_an_event_the_handler_chokes_on_is_skipped_and_the_watch_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    index = VirtualMachineIndex(None)
    index.apply_list([], '1')
    index.indexes = cast(Any, None)  # every upsert now raises (TypeError): the worst a handler can do
    index.apply_event({'type': 'ADDED', 'object': vm('x')})
    assert index.bad_objects.counts['error'] == 1
    assert index.resource_version == '5'  # applied: the watch moves on instead of replaying it forever
    index.apply_event({'type': 'BOOKMARK', 'object': {'metadata': ['odd']}})  # odd metadata: no crash either


def test_bad_objects_remember_a_bounded_set(caplog: pytest.LogCaptureFixture) -> None:
    bad = BadObjects('things', remember=2)
    for name in ('a', 'b', 'a', 'c', 'a'):
        bad.report(name, 'r', 'detail')
    assert bad.counts['r'] == 5
    assert len(bad._logged) <= 2
    assert [r.getMessage().split(':')[0] for r in caplog.records] == ['things a', 'things b', 'things c', 'things a']


def zone(name: str, **fields: Any) -> dict[str, Any]:
    return {'metadata': {'namespace': 'ns', 'name': name, 'resourceVersion': '3'}, **fields}


def test_a_garbage_zone_is_not_kept_and_the_rest_are() -> None:
    changed: list[tuple[str, str]] = []
    cache = ZoneCache(None, on_change=changed.append)
    cache.apply_list(
        [
            zone('good', spec={'managedVMs': {'folderMoID': 'group-v3'}}),
            zone('no-spec'),
            zone('spec-str', spec='x'),
            zone('managed-list', spec={'managedVMs': [1]}),
            zone('folder-int', spec={'managedVMs': {'folderMoID': 7}}),
            {'metadata': {'namespace': 'ns'}},
        ],
        '3',
    )
    assert sorted(z['metadata']['name'] for z in cache.zones()) == ['good', 'no-spec']
    assert cache.bad_objects.counts == {'bad_spec': 3, 'no_name': 1}
    cache.apply_event({'type': 'MODIFIED', 'object': zone('good', spec='now garbage')})
    assert cache.get(('ns', 'good')) is None and changed[-1] == ('ns', 'good')  # dropped, and reconciled
    cache.apply_event({'type': 'ADDED', 'object': zone('later', spec={'managedVMs': {'folderMoID': 'group-v9'}})})
    assert cache.get(('ns', 'later')) is not None


async def test_keyed_tasks_are_bounded_and_ordered_per_key() -> None:
    tasks = KeyedTasks(limit=2)
    gates = {n: asyncio.Event() for n in ('a1', 'a2', 'b', 'c')}
    order: list[str] = []

    def work(name: str) -> Any:
        async def run() -> None:
            await gates[name].wait()
            order.append(name)

        return run

    await tasks.start(('ns', 'a'), work('a1'))
    await tasks.start(('ns', 'a'), work('a2'))  # waits for a1, holding the second slot
    assert tasks.busy(('ns', 'a')) and len(tasks) == 2
    third = asyncio.create_task(tasks.start(('ns', 'b'), work('b')))
    await asyncio.sleep(0.01)
    assert not third.done()  # both slots taken: start waits (backpressure)
    gates['a2'].set()
    await asyncio.sleep(0.01)
    assert order == []  # a2 waits for a1 even though its own gate is open
    gates['a1'].set()
    await third
    gates['b'].set()
    while len(tasks):
        await asyncio.sleep(0.005)
    assert order == ['a1', 'a2', 'b'] and not tasks.busy(('ns', 'a'))


@dataclass
class FakeSignal:
    namespace: str
    name: str
    moref: str
    digest: int = 1
    reason: str = 'changed'


def service(queue: WorkQueue | None = None, **overrides: Any) -> Service:
    settings = ServiceSettings(vc_url='https://vc.invalid/sdk', vc_user='u', leader_elect=False, **overrides)
    return Service(settings, api=client.ApiClient(), disabled=False, queue=queue or WorkQueue(max_depth=1))


async def test_ready_needs_the_index_synced() -> None:
    s = service()
    ok, reason = s.ready()
    assert not ok and 'index has not synced' in reason, reason
    s.shard.held = s.shard.watching = True  # even a running watcher does not make it ready before the first list
    assert not s.ready()[0]
    s.index.apply_list([], '1')
    ok, reason = s.ready()
    assert not ok and 'watcher stopped' in reason, reason  # no watcher in the slot: not ready either


async def test_a_full_queue_is_not_ready_counted_and_forgets_the_vm(caplog: pytest.LogCaptureFixture) -> None:
    s = service()
    s.index.apply_list([vm('a'), vm('b')], '1')
    forgotten: list[str] = []
    s.shard.decider = s.shard.ledger.decider = cast(
        Any, type('D', (), {'forget': lambda self, m: forgotten.append(m)})()
    )
    await s.shard.intake.handle(cast(Signal, FakeSignal('ns', 'a', 'vm-1')))
    assert not s.queue.full or s.queue.depth == 1
    await s.shard.intake.handle(cast(Signal, FakeSignal('ns', 'b', 'vm-2')))  # the queue holds one key: refused
    assert forgotten == ['vm-2']
    assert s.metrics.dropped.labels(name='virtualmachine')._value.get() == 1
    assert any('work queue is full' in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert s.ready() == (False, 'the work queue is full (1 keys): new requests are dropped')
    assert await s.queue.get() == ('ns', 'a')
    s.queue.done(('ns', 'a'))
    assert not s.ready()[1].startswith('the work queue is full')  # room again
    await s.stop()


class SlowObjects:
    """A CustomObjectsApi whose GET blocks until released (a hung API server), answering a live VM."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def get_namespaced_custom_object(self, *args: Any, _request_timeout: float = 0) -> dict[str, Any]:
        self.release.wait(_request_timeout)
        return vm(args[4])


async def test_a_slow_get_holds_only_its_own_signals() -> None:
    s = service(WorkQueue(), validation_concurrency=2, kube_timeout_s=5.0)
    s.index.apply_list([vm('indexed')], '1')
    s.shard.intake.objects = slow = SlowObjects()
    await s.shard.intake.handle(
        cast(Signal, FakeSignal('ns', 'missed', 'vm-1'))
    )  # returns at once: its GET runs in a task
    await s.shard.intake.handle(cast(Signal, FakeSignal('ns', 'indexed', 'vm-2')))
    assert s.queue.depth == 1 and await s.queue.get() == ('ns', 'indexed')  # not held behind the GET
    s.index.apply_event({'type': 'ADDED', 'object': vm('missed')})
    await s.shard.intake.handle(cast(Signal, FakeSignal('ns', 'missed', 'vm-1')))  # indexed now, but waits its turn
    assert s.validating == 2 and s.queue.depth == 0
    slow.release.set()
    while s.validating:
        await asyncio.sleep(0.005)
    assert s.queue.depth == 1 and await s.queue.get() == ('ns', 'missed')
    await s.stop()


async def test_a_queue_shut_down_is_not_reported_as_full(caplog: pytest.LogCaptureFixture) -> None:
    s = service(WorkQueue())
    s.index.apply_list([vm('a')], '1')
    await s.queue.shutdown()
    await s.shard.intake.handle(cast(Signal, FakeSignal('ns', 'a', 'vm-1')))
    assert s.metrics.dropped.labels(name='virtualmachine')._value.get() == 0
    assert not any('work queue is full' in r.getMessage() for r in caplog.records)
    await s.stop()


class LabelledObjects:
    """A CustomObjectsApi whose GET answers a VirtualMachine labelled with vCenter `vcenter`."""

    def __init__(self, vcenter: str) -> None:
        self.vcenter = vcenter

    def get_namespaced_custom_object(self, *args: Any, _request_timeout: float = 0) -> dict[str, Any]:
        return vm(
            args[4], metadata={'namespace': 'ns', 'name': args[4], 'labels': {'vmwatch.dev/vcenter': self.vcenter}}
        )


async def test_a_signal_naming_a_vm_of_another_vcenter_is_skipped(tmp_path: Any) -> None:
    """vm-1 on vCenter a may carry a name (extraConfig) that belongs to vCenter b's VirtualMachine: shard a never
    enqueues it, whether the index has it or the validation GET finds it (issue 12)."""
    f = tmp_path / 'vcenters.yaml'
    f.write_text(
        ''.join(f'- {{name: {n}, url: "https://vc-{n}.invalid/sdk", user: u, passwordFile: /p}}\n' for n in 'ab')
    )
    s = Service(ServiceSettings(vcenters_file=f, leader_elect=False), api=client.ApiClient(), disabled=False,
                queue=WorkQueue())  # fmt: skip
    labelled = {n: vm(n, metadata={'namespace': 'ns', 'name': n, 'labels': {'vmwatch.dev/vcenter': v}})
                for n, v in (('mine', 'a'), ('theirs', 'b'))}  # fmt: skip
    s.index.apply_list(list(labelled.values()), '1')
    a, b = s.shards['a'], s.shards['b']
    await a.intake.handle(cast(Signal, FakeSignal('ns', 'theirs', 'vm-1')))
    await a.intake.handle(cast(Signal, FakeSignal('ns', 'mine', 'vm-1')))
    await b.intake.handle(cast(Signal, FakeSignal('ns', 'theirs', 'vm-1')))
    a.intake.objects = LabelledObjects('b')
    await a.intake.handle(cast(Signal, FakeSignal('ns', 'new-on-b', 'vm-2')))  # not indexed yet: GET says b's
    while s.validating:
        await asyncio.sleep(0.005)
    assert sorted([await s.queue.get(), await s.queue.get()]) == [('ns', 'mine'), ('ns', 'theirs')]
    assert s.queue.depth == 0
    value = s.metrics.registry.get_sample_value
    assert value('vmwatch_skipped_total', {'vcenter': 'a', 'reason': 'other_vcenter'}) == 2
    assert value('vmwatch_validation_gets_total', {'vcenter': 'a'}) == 1
    assert value('vmwatch_skipped_total', {'vcenter': 'b', 'reason': 'other_vcenter'}) is None
    await s.stop()
