# SPDX-License-Identifier: Apache-2.0
"""The watcher's wait loop, hand-off, add/remove pause, test hook and slot, against scripted fakes.

The fakes stand in for the Rust Decider (style.md rule 24), the raw collector and the views, so the
protocol paths vcsim never takes (InvalidCollectorVersion, faults, decode errors) are covered too.
The same behaviour against a real server is in tests/scenarios/test_watcher*.py.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from vmwatch import watcher as watcher_mod
from vmwatch.settings import WatchSettings
from vmwatch.vsphere import (
    Endpoint,
    MoRef,
    NameFetch,
    NotAuthenticatedError,
    ProtocolError,
    Session,
    SessionError,
    TransportError,
    VsphereFault,
)
from vmwatch.watcher import AsyncSignalDisabledError, NoWatcherError, Watcher, WatcherSlot

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return 'asyncio'


# -- fakes of the Rust types ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeFault:
    fault_type: str
    message: str = ''


@dataclass(frozen=True)
class FakeSignal:
    moref: str
    namespace: str
    name: str
    kind: int = 1
    verified: bool = False
    deleting: bool = False
    priority: int = 0
    changed: tuple[str, ...] = ('config.extraConfig',)
    reason: str = 'changed'
    digest: int = 1


@dataclass(frozen=True)
class FakePending:
    moref: str
    kind: int = 1
    changed: tuple[str, ...] = ('summary.runtime.powerState',)


@dataclass
class FakeBatch:
    version: str | None
    truncated: bool = False
    signals: list[FakeSignal] = field(default_factory=list)
    pending: list[FakePending] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    missing: list[tuple[str, str, str]] = field(default_factory=list)
    bad: tuple[tuple[str | None, int, str, str], ...] = ()

    @property
    def objects(self) -> int:
        return len(self.signals) + len(self.pending) + sum(self.skipped.values())

    @property
    def changes(self) -> int:
        return self.objects

    @property
    def kinds(self) -> tuple[int, int, int]:
        return 0, self.objects, 0  # (enter, modify, leave) as the core's Batch.kinds


class ScriptedDecider:
    """decide(body): the body is a key into `outcomes`; b'' is a heartbeat. Records resolve/forget."""

    def __init__(self, outcomes: dict[bytes, Any] | None = None) -> None:
        self.outcomes = outcomes or {}
        self.resolved: list[tuple[str, str, str]] = []
        self.forgotten: list[str] = []
        self.delivered_to: list[str] = []
        self.initial_syncs = 0

    def decide(self, body: bytes) -> Any:
        if body == b'':
            return FakeBatch(version=None)
        if body == b'canceled':
            return FakeFault('RequestCanceled')
        outcome = self.outcomes[body]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def resolve(self, moref: str, kind: int, changed: Any, namespace: str, name: str) -> FakeSignal | None:
        self.resolved.append((moref, namespace, name))
        return FakeSignal(moref, namespace, name, reason='changed') if namespace and name else None

    def forget(self, moref: str) -> None:
        self.forgotten.append(moref)

    def delivered(self, moref: str, digest: int) -> None:
        self.delivered_to.append(moref)

    def end_initial_sync(self) -> int:
        self.initial_syncs += 1
        return 0


class ScriptedCollector:
    """Returns scripted bodies in order; when the script is empty a long wait blocks until cancel/close
    and a zero wait returns a heartbeat at once (vcsim's behaviour)."""

    def __init__(self, script: list[bytes | Exception] | None = None, *, honour_cancel: bool = True) -> None:
        self.script = list(script or [])
        self.calls: list[tuple[str, int]] = []
        self.cancels = 0
        self.closed = False
        self.honour_cancel = honour_cancel
        self.in_wait = False
        self._wake = threading.Event()
        self._lock = threading.Lock()

    def push(self, *items: bytes | Exception) -> None:
        with self._lock:
            self.script.extend(items)
        self._wake.set()

    def wait(self, version: str, *, max_wait_s: int) -> bytes:
        self.calls.append((version, max_wait_s))
        self.in_wait = True
        try:
            while True:
                with self._lock:
                    if self.closed:
                        raise TransportError('WaitForUpdatesEx: interrupted by close')
                    if self._canceled:
                        self._canceled = False
                        return b'canceled'
                    if self.script:
                        item = self.script.pop(0)
                        if isinstance(item, Exception):
                            raise item
                        return item
                    if max_wait_s == 0:
                        return b''
                    self._wake.clear()
                self._wake.wait()
        finally:
            self.in_wait = False

    _canceled = False

    def cancel(self) -> bool:
        self.cancels += 1
        if self.honour_cancel and self.in_wait:
            with self._lock:
                self._canceled = True
            self._wake.set()
        return True

    def close(self) -> None:
        with self._lock:
            self.closed = True
        self._wake.set()


class FakeViews:
    def __init__(self, collector: ScriptedCollector) -> None:
        self.collector = collector
        self.changes: list[tuple[str, MoRef, str, bool]] = []  # (op, ref, owner, a wait was in flight)
        self.closed = False
        self.fail_next: Exception | None = None

    def add_owner(self, ref: MoRef, owner: str) -> bool:
        return False  # every add goes through the paused path, so the tests see each ListView change

    def drop_owner(self, ref: MoRef, owner: str) -> bool:
        return False

    def add(self, ref: MoRef, owner: str) -> bool:
        self.changes.append(('add', ref, owner, self.collector.in_wait))
        if self.fail_next is not None:
            e, self.fail_next = self.fail_next, None
            raise e
        return True

    def remove(self, ref: MoRef, owner: str) -> bool:
        self.changes.append(('remove', ref, owner, self.collector.in_wait))
        return True

    def owners(self) -> dict[MoRef, frozenset[str]]:
        return {}

    def close(self) -> None:
        self.closed = True


class FakeSession(Session):
    def __init__(self) -> None:
        super().__init__(Endpoint(url='https://127.0.0.1:1/sdk', user='u', password_file=Path('/nonexistent')))
        self.keepalive_error: Exception | None = None

    def keepalive(self) -> None:
        if self.keepalive_error is not None:
            raise self.keepalive_error


class FakeWatcher(Watcher):
    def __init__(
        self,
        collector: ScriptedCollector,
        decider: ScriptedDecider,
        *,
        names: Callable[[list[str]], NameFetch] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault('keepalive_s', 0)
        kwargs.setdefault('session', FakeSession())
        super().__init__(decider=decider, **kwargs)  # type: ignore[arg-type]
        self.fake_collector = collector
        self.fake_views = FakeViews(collector)
        self.names = names or (lambda morefs: NameFetch())
        self.fetches: list[list[str]] = []

    async def _connect(self) -> Any:
        return self.fake_views, self.fake_collector

    def _fetch_names(self, morefs: list[str]) -> NameFetch:
        self.fetches.append(list(morefs))
        return self.names(morefs)


@pytest.fixture(autouse=True)
def fake_fault_type(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watcher_mod, 'Fault', FakeFault)


def sig(moref: str, ns: str = 'ns', name: str | None = None) -> FakeSignal:
    return FakeSignal(moref, ns, name or f'name-{moref}')


async def take(w: Watcher, n: int, timeout_s: float = 5.0) -> list[Any]:
    out = []
    async with asyncio.timeout(timeout_s):
        for _ in range(n):
            out.append(await anext(w))
    return out


# -- the loop ------------------------------------------------------------------------------------------------


async def test_version_is_carried_forward_and_heartbeats_keep_it() -> None:
    decider = ScriptedDecider({b'1': FakeBatch('v1', signals=[sig('vm-1')]), b'2': FakeBatch('v2')})
    collector = ScriptedCollector([b'1', b'', b'2'])
    async with FakeWatcher(collector, decider, settings=WatchSettings(max_wait_s=7)) as w:
        assert [s.moref for s in await take(w, 1)] == ['vm-1']
        await w.wait_batches(3)
        assert w.version == 'v2'
        assert w.stats['heartbeats'] == 1
    assert [v for v, _ in collector.calls[:4]] == ['', 'v1', 'v1', 'v2']
    assert {m for _, m in collector.calls} == {7}


async def test_truncated_pages_are_followed_at_once() -> None:
    pages = {f'p{i}'.encode(): FakeBatch(f'v{i}', truncated=i < 3, signals=[sig(f'vm-{i}')]) for i in range(4)}
    collector = ScriptedCollector(list(pages))
    async with FakeWatcher(collector, ScriptedDecider(pages)) as w:
        got = await take(w, 4)
        assert [s.moref for s in got] == ['vm-0', 'vm-1', 'vm-2', 'vm-3']
    assert [v for v, _ in collector.calls[:4]] == ['', 'v0', 'v1', 'v2']


async def test_invalid_collector_version_resyncs_from_empty() -> None:
    decider = ScriptedDecider(
        {b'a': FakeBatch('v1'), b'bad': FakeFault('InvalidCollectorVersion'), b'b': FakeBatch('-')}
    )
    collector = ScriptedCollector([b'a', b'bad', b'b'])
    async with FakeWatcher(collector, decider) as w:
        await w.wait_batches(2)
        assert w.stats['resyncs'] == 1
        assert w.error is None
    assert [v for v, _ in collector.calls[:3]] == ['', 'v1', '']


@pytest.mark.parametrize(
    ('outcome', 'error'),
    [
        (FakeFault('NotAuthenticated'), NotAuthenticatedError),
        (FakeFault('ManagedObjectNotFound', 'collector gone'), VsphereFault),
        (TransportError('connection refused'), TransportError),
    ],
)
async def test_a_session_or_wait_failure_ends_the_watcher_after_the_signals(outcome: Any, error: type) -> None:
    decider = ScriptedDecider({b'1': FakeBatch('v1', signals=[sig('vm-1'), sig('vm-2')]), b'x': FakeFault('x')})
    script: list[bytes | Exception] = [b'1', outcome if isinstance(outcome, Exception) else b'f']
    decider.outcomes[b'f'] = outcome
    slot = WatcherSlot(disabled=False)
    w = FakeWatcher(ScriptedCollector(script), decider, slot=slot)
    await w.start()
    got = []
    with pytest.raises(error):
        async for s in w:
            got.append(s.moref)
    assert got == ['vm-1', 'vm-2']
    assert isinstance(w.error, error)
    assert slot.watcher is None
    assert w.fake_views.closed and w.fake_collector.closed
    with pytest.raises(StopAsyncIteration):
        await anext(w)  # the error is raised once
    await w.aclose()  # and closing afterwards is quiet


async def test_an_undecodable_response_is_a_protocol_error() -> None:
    from vmwatch._vmwatch import DecodeError

    decider = ScriptedDecider()
    decider.decide = lambda body: (_ for _ in ()).throw(DecodeError('bad'))  # type: ignore[method-assign]
    async with FakeWatcher(ScriptedCollector([b'<html>']), decider) as w:
        assert isinstance(await w.wait_closed(), ProtocolError)


async def test_bad_updates_and_missing_sets_are_logged_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    from vmwatch import problems
    from vmwatch.metrics import Metrics

    bad = (('vm-3', 1234, 'invalid_value', 'invalid change op "bogus"'), (None, 99, 'unexpected_element', 'x' * 5000))
    missing = [('vm-1', 'config.numaInfo', 'NoPermission'), ('vm-2', '', 'ManagedObjectNotFound')]
    pages = {
        b'1': FakeBatch('v1', signals=[sig('vm-1')], bad=bad, missing=missing),
        b'2': FakeBatch('v2', missing=missing[:1]),
    }
    caplog.set_level('INFO', logger='vmwatch.watcher')
    async with FakeWatcher(ScriptedCollector([b'1', b'2']), ScriptedDecider(pages)) as w:
        assert [s.moref for s in await take(w, 1)] == ['vm-1']  # the rest of the response is kept
        await w.wait_batches(2)
        assert w.error is None and w.running  # a bad object update is no reason to restart
        assert w.stats['bad_updates'] == 2
        assert (w.stats['missing_NoPermission'], w.stats['missing_ManagedObjectNotFound']) == (2, 1)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == 'WARNING']
    assert warnings[0] == (
        'skipped an undecodable object update of vm-3 at byte offset 1234 (invalid_value): invalid change op "bogus"'
    )
    assert warnings[1].startswith('skipped an undecodable object update of an unknown object at byte offset 99 ')
    assert len(warnings[1]) < 400  # the message is bounded
    infos = [r.getMessage() for r in caplog.records if r.levelname == 'INFO' and 'cannot report' in r.getMessage()]
    # once per (VM, path, fault), although vm-1's came twice
    assert infos == [
        'vCenter cannot report property config.numaInfo of vm-1: NoPermission',
        'vCenter cannot report the object of vm-2: ManagedObjectNotFound',
    ]
    m = Metrics()
    seen: dict[str, int] = {}
    m.shard('vc-a').observe_problems(w.stats, seen)
    m.shard('vc-a').observe_problems(w.stats, seen)  # what was copied is not counted twice
    text = m.exposition().decode()
    assert 'vmwatch_bad_object_updates_total{vcenter="vc-a"} 2.0' in text
    assert 'vmwatch_missing_properties_total{fault="NoPermission",vcenter="vc-a"} 2.0' in text
    assert 'vmwatch_missing_properties_total{fault="ManagedObjectNotFound",vcenter="vc-a"} 1.0' in text
    assert problems.PROBLEMS is not None


def test_missing_entries_are_remembered_in_bounded_memory() -> None:
    from collections import Counter

    from vmwatch.problems import UpdateProblems

    p = UpdateProblems(remember=3, max_faults=2)
    stats: Counter[str] = Counter()
    for i in range(10_000):
        p.report(bad=(), missing=[(f'vm-{i}', 'p' * 10_000, f'Fault{i % 5}')], stats=stats)
    assert len(p) == 3  # an LRU of the latest
    assert sorted(stats) == ['missing_Fault0', 'missing_Fault1', 'missing_other']  # labels are bounded too
    assert sum(stats.values()) == 10_000
    assert p.fault_label('a b"c') == 'other' and UpdateProblems().fault_label('a b"c{}') == 'a_b_c__'


async def test_clean_close_cancels_the_wait_and_ends_iteration() -> None:
    collector = ScriptedCollector()
    w = FakeWatcher(collector, ScriptedDecider())
    async with w:
        await w.wait_batches(0)
        while not collector.in_wait:
            await asyncio.sleep(0.01)
    assert collector.cancels >= 1
    assert w.error is None
    assert w.fake_views.closed and collector.closed
    with pytest.raises(StopAsyncIteration):
        await anext(w)


async def test_close_falls_back_to_closing_the_socket_when_cancel_does_not_interrupt() -> None:
    collector = ScriptedCollector(honour_cancel=False)
    w = FakeWatcher(collector, ScriptedDecider(), cancel_grace_s=0.3)
    await w.start()
    while not collector.in_wait:
        await asyncio.sleep(0.01)
    async with asyncio.timeout(5):
        await w.aclose()
    assert collector.closed and w.error is None


async def test_keepalive_failure_interrupts_the_wait_and_ends_with_not_authenticated() -> None:
    session = FakeSession()
    session.keepalive_error = NotAuthenticatedError('logged out')
    collector = ScriptedCollector(honour_cancel=False)  # like vcsim: Logout does not wake the wait
    w = FakeWatcher(collector, ScriptedDecider(), session=session, keepalive_s=0.05)
    await w.start()
    async with asyncio.timeout(5):
        error = await w.wait_closed()
    assert isinstance(error, NotAuthenticatedError)


# -- step G ---------------------------------------------------------------------------------------------------


async def test_one_name_fetch_per_batch_and_per_object_faults_skip_the_object() -> None:
    pending = [FakePending('vm-1'), FakePending('vm-2'), FakePending('vm-3'), FakePending('vm-4')]
    decider = ScriptedDecider({b'1': FakeBatch('v1', pending=pending)})

    def names(morefs: list[str]) -> NameFetch:
        return NameFetch(
            values={'vm-1': 'ns1/a', 'vm-2': None, 'vm-4': 'not-a-name'},
            skipped={'vm-3': 'ManagedObjectNotFound'},
        )

    async with FakeWatcher(ScriptedCollector([b'1']), decider, names=names) as w:
        got = await take(w, 1)
        await w.sync()
        assert w.drain() == []
        assert w.fetches == [['vm-1', 'vm-2', 'vm-3', 'vm-4']]
        assert [(s.namespace, s.name) for s in got] == [('ns1', 'a')]
        assert decider.resolved == [('vm-1', 'ns1', 'a'), ('vm-2', '', ''), ('vm-4', '', '')]
        assert decider.forgotten == ['vm-3']
        assert w.stats['skipped_vanished'] == 1
        assert w.error is None


async def test_a_failed_name_fetch_skips_the_batch_but_not_the_watcher() -> None:
    decider = ScriptedDecider(
        {b'1': FakeBatch('v1', pending=[FakePending('vm-1')]), b'2': FakeBatch('v2', signals=[sig('vm-2')])}
    )

    def names(morefs: list[str]) -> NameFetch:
        raise VsphereFault('InvalidProperty', 'keyed paths not supported')

    async with FakeWatcher(ScriptedCollector([b'1', b'2']), decider, names=names) as w:
        assert [s.moref for s in await take(w, 1)] == ['vm-2']
        assert decider.forgotten == ['vm-1']
        assert w.error is None


async def test_a_session_failure_during_the_name_fetch_ends_the_watcher() -> None:
    decider = ScriptedDecider({b'1': FakeBatch('v1', pending=[FakePending('vm-1')])})

    def names(morefs: list[str]) -> NameFetch:
        raise NotAuthenticatedError('gone')

    async with FakeWatcher(ScriptedCollector([b'1']), decider, names=names) as w:
        assert isinstance(await w.wait_closed(), SessionError)


# -- hand-off -------------------------------------------------------------------------------------------------


async def test_signals_for_one_vm_coalesce_and_keep_their_place() -> None:
    first = sig('vm-1', name='a')
    later = FakeSignal('vm-1', 'ns', 'a', changed=('snapshot',))
    decider = ScriptedDecider(
        {b'1': FakeBatch('v1', signals=[first, sig('vm-2', name='b')]), b'2': FakeBatch('v2', signals=[later])}
    )
    async with FakeWatcher(ScriptedCollector([b'1', b'2']), decider) as w:
        await w.wait_batches(2)
        got = w.drain()
    assert [(s.name, s.changed) for s in got] == [('a', ('snapshot',)), ('b', ('config.extraConfig',))]
    assert w.stats['coalesced'] == 1


async def test_a_full_hand_off_holds_the_loop_without_losing_signals() -> None:
    batches = {f'{i}'.encode(): FakeBatch(f'v{i}', signals=[sig(f'vm-{i}')]) for i in range(5)}
    collector = ScriptedCollector(list(batches))
    async with FakeWatcher(collector, ScriptedDecider(batches), max_pending=2) as w:
        await w.wait_batches(2)
        assert w.pending == 2
        got = await take(w, 5)
    assert [s.moref for s in got] == [f'vm-{i}' for i in range(5)]


# -- test hook ------------------------------------------------------------------------------------------------


async def test_sync_replaces_the_long_wait_by_a_zero_wait_poll() -> None:
    collector = ScriptedCollector()
    decider = ScriptedDecider({b'late': FakeBatch('v2', signals=[sig('vm-9')])})
    async with FakeWatcher(collector, decider) as w:
        while not collector.in_wait:
            await asyncio.sleep(0.01)
        collector.script.append(b'late')  # queued server-side, not yet delivered
        await w.sync()
        assert [s.moref for s in w.drain()] == ['vm-9']
        assert any(m == 0 for _, m in collector.calls)  # the late change came with a zero-wait poll
        before = len(collector.calls)
        await w.sync()
        assert len(collector.calls) > before


# -- add / remove ---------------------------------------------------------------------------------------------


async def test_add_and_remove_run_while_no_wait_is_in_flight_and_the_wait_resumes() -> None:
    collector = ScriptedCollector([b'1'])
    decider = ScriptedDecider({b'1': FakeBatch('v1'), b'2': FakeBatch('v2', signals=[sig('vm-2')])})
    async with FakeWatcher(collector, decider) as w:
        await w.wait_batches(1)
        while not collector.in_wait:
            await asyncio.sleep(0.01)
        await w.add('Folder:group-1', 'ns/zone')
        await w.remove(MoRef('Folder', 'group-1'), 'ns/zone')
        assert [(op, str(ref), owner, busy) for op, ref, owner, busy in w.fake_views.changes] == [
            ('add', 'Folder:group-1', 'ns/zone', False),
            ('remove', 'Folder:group-1', 'ns/zone', False),
        ]
        collector.push(b'2')
        assert [s.moref for s in await take(w, 1)] == ['vm-2']
    versions = [v for v, _ in collector.calls[1:]]
    assert set(versions[: versions.index('v2')]) == {'v1'}  # each re-issued wait kept the version


async def test_a_failed_add_is_raised_and_the_watcher_goes_on() -> None:
    collector = ScriptedCollector()
    async with FakeWatcher(collector, ScriptedDecider()) as w:
        w.fake_views.fail_next = VsphereFault('ManagedObjectNotFound', 'no such folder')
        with pytest.raises(VsphereFault, match='ManagedObjectNotFound'):
            await w.add('Folder:group-404', 'ns/zone')
        await w.add('Folder:group-1', 'ns/zone')
        assert w.running


# -- slot (spec 1.2, 6.2 #22, 7.2 #7) -------------------------------------------------------------------------


async def test_slot_errors_disabled_first_then_no_watcher() -> None:
    disabled = WatcherSlot(disabled=True)
    with pytest.raises(AsyncSignalDisabledError, match='^async signal disabled$'):
        await disabled.add('Folder:group-1', 'ns/z')
    with pytest.raises(AsyncSignalDisabledError):
        await disabled.remove('Folder:group-1', 'ns/z')
    empty = WatcherSlot(disabled=False)
    with pytest.raises(NoWatcherError, match='^no watcher$'):
        await empty.add('Folder:group-1', 'ns/z')
    with pytest.raises(NoWatcherError):
        await empty.remove('Folder:group-1', 'ns/z')
    with pytest.raises(NoWatcherError):
        await empty.close()


async def test_slot_reads_the_switch_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv('ASYNC_SIGNAL_ENABLED', 'false')
    assert WatcherSlot().disabled
    monkeypatch.delenv('ASYNC_SIGNAL_ENABLED')
    monkeypatch.setenv('ASYNC_SIGNAL_DISABLED', 'no')
    assert not WatcherSlot().disabled


async def test_a_disabled_slot_refuses_to_start_a_watcher() -> None:
    w = FakeWatcher(ScriptedCollector(), ScriptedDecider(), slot=WatcherSlot(disabled=True))
    with pytest.raises(AsyncSignalDisabledError):
        await w.start()


async def test_slot_delegates_and_a_stopping_watcher_clears_only_itself() -> None:
    slot = WatcherSlot(disabled=False)
    old = FakeWatcher(ScriptedCollector(), ScriptedDecider(), slot=slot)
    await old.start()
    assert slot.watcher is old
    await slot.add('Folder:group-1', 'ns/z')
    assert old.fake_views.changes[0][:3] == ('add', MoRef('Folder', 'group-1'), 'ns/z')

    new = FakeWatcher(ScriptedCollector(), ScriptedDecider(), slot=slot)
    await new.start()  # e.g. the service restarted a watcher after an external close
    assert slot.watcher is new
    await old.aclose()
    assert slot.watcher is new  # compare-and-swap: the old loop's exit leaves the new watcher alone

    await slot.close()
    assert slot.watcher is None
    assert new.error is None
    with pytest.raises(NoWatcherError):
        await slot.add('Folder:group-1', 'ns/z')


async def test_add_on_a_stopped_watcher_says_no_watcher() -> None:
    w = FakeWatcher(ScriptedCollector([TransportError('refused')]), ScriptedDecider())
    await w.start()
    await w.wait_closed()
    with pytest.raises(NoWatcherError) as info:
        await w.add('Folder:group-1', 'ns/z')
    assert isinstance(info.value.__cause__, TransportError)
