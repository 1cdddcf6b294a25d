# SPDX-License-Identifier: Apache-2.0
"""The vSphere watcher: vCenter changes in, `Signal`s out (spec 1.1, 1.2, 2.4, 3, 7.2).

    async with Watcher(endpoint=..., containers={'Folder:group-v3': ['ns/zone']}) as w:
        await w.add('Folder:group-v4', 'ns/other-zone')
        async for signal in w:
            print(signal.namespace, signal.name)

One background task long-polls WaitForUpdatesEx (raw bytes, in a thread) and hands each response to the
Rust `Decider`; VMs whose name is unknown get one batched name fetch per response (step G). Signals go
into a bounded hand-off keyed by (namespace, name) that coalesces repeats, so the loop does not wait
for a slow consumer. Only session and transport failures end a watcher; `error` (and the iterator)
say why. Faults of single objects skip the object.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, Self, TypeVar

from vmwatch._vmwatch import (
    Batch,
    Decider,
    DecodeError,
    Fault,
    Index,
    Pending,
    Signal,
    VmwatchError,
    parse_namespaced_name,
)
from vmwatch.problems import PROBLEMS
from vmwatch.responses import ResponseLog
from vmwatch.settings import FilterSettings, WatchSettings, async_signal_disabled
from vmwatch.vsphere import (
    Collector,
    Endpoint,
    MoRef,
    NameFetch,
    ProtocolError,
    RefLike,
    Session,
    SessionError,
    Views,
    VsphereFault,
    fetch_names,
)
from vmwatch.vsphere.errors import fault_error

__all__ = ['AsyncSignalDisabledError', 'NoWatcherError', 'Watcher', 'WatcherSlot']

log = logging.getLogger('vmwatch.watcher')

T = TypeVar('T')


class NoWatcherError(VmwatchError):
    """No watcher is running (spec 1.2 ErrNoWatcher): retry later."""

    def __init__(self, message: str = 'no watcher') -> None:
        super().__init__(message)


class AsyncSignalDisabledError(VmwatchError):
    """The feature is switched off (ASYNC_SIGNAL_DISABLED / ASYNC_SIGNAL_ENABLED=false; spec 1.2)."""

    def __init__(self, message: str = 'async signal disabled') -> None:
        super().__init__(message)


def make_decider(settings: FilterSettings, index: Index) -> Decider:
    """The Rust decision core configured from `settings`, reading `index`."""
    return Decider(
        index=index,
        watched_paths=settings.watched_paths,
        ignored_keys=settings.all_ignored_keys(),
        name_key=settings.name_key,
        cache_max_entries=settings.cache_max_entries,
        cache_ttl_s=settings.cache_ttl_s,
        signal_on_leave=settings.signal_on_leave,
    )


class Watcher:
    """Watches the VMs in a set of containers of one vCenter and yields the ones that must be reconciled.

    Pass either `endpoint` (the watcher logs in on start and out on close, reading the password file
    each time) or a logged-in `session` (borrowed: left logged in). `containers` maps container
    references ('Folder:group-v3') to owner IDs. `decider` carries the fingerprint cache across watcher
    restarts (spec 1.1: the cache is process-global); without one, a fresh Decider over `index` (or an
    empty Index) is built from `filter_settings`. With a `slot`, the watcher puts itself there when it
    starts and takes itself out (compare-and-swap) when it stops.

    A signal counts as delivered (`Decider.delivered`) when it is taken from the watcher, unless
    `deliver_on_take=False`: then the consumer reports delivery itself (the Service does, once the request
    has left its work queue). Until then a VM that re-enters unchanged (a new watcher) is signalled again.
    """

    def __init__(
        self,
        *,
        endpoint: Endpoint | None = None,
        session: Session | None = None,
        containers: Mapping[MoRef, Iterable[str]] | Mapping[str, Iterable[str]] | None = None,
        decider: Decider | None = None,
        index: Index | None = None,
        settings: WatchSettings | None = None,
        filter_settings: FilterSettings | None = None,
        slot: WatcherSlot | None = None,
        max_pending: int = 100_000,
        keepalive_s: float = 60.0,
        pause_wait_on_modify: bool = True,
        cancel_grace_s: float = 5.0,
        deliver_on_take: bool = True,
    ) -> None:
        if (endpoint is None) == (session is None):
            raise ValueError('pass exactly one of endpoint= or session=')
        self.settings = settings or WatchSettings()
        self.filter_settings = fs = filter_settings or FilterSettings()
        if self.settings.max_wait_s < 1 or not 0 < self.settings.max_object_updates:
            raise ValueError('max_wait_s must be >= 1 and max_object_updates >= 1')
        self._owns_session = session is None
        self._session = session if session is not None else Session(endpoint)  # type: ignore[arg-type]
        self._containers = {MoRef.parse(ref): tuple(ids) for ref, ids in (containers or {}).items()}
        self.decider = decider or make_decider(fs, index or Index())
        self._slot = slot
        self._max_pending = max(1, max_pending)
        self._keepalive_s = keepalive_s
        self._pause_on_modify = pause_wait_on_modify
        self._cancel_grace_s = cancel_grace_s
        self._deliver_on_take = deliver_on_take
        self._synced = False  # a complete initial sync was processed
        self.responses = ResponseLog()
        """Arrival times, sizes and kinds of the responses (metrics: version lag, change -> enqueue latency)."""
        self.decide_seconds: deque[float] = deque(maxlen=4096)
        """Decode + decide time of each response not yet taken (`vmwatch_batch_duration_seconds`); bounded."""

        self._views: Views | None = None
        self._collector: Collector | None = None
        self._main: asyncio.Task[None] | None = None
        self._keepalive_task: asyncio.Task[None] | None = None
        self._interrupter: asyncio.Task[None] | None = None
        # the long poll and everything that touches the Decider run on one thread of their own: a 300 s
        # wait does not hold a worker of the default pool, and the Decider is never used concurrently
        self._poll_pool: ThreadPoolExecutor | None = None
        self._stopping = False
        self._error: BaseException | None = None
        self._error_raised = False
        self._loop_exited = asyncio.Event()
        self._done = asyncio.Event()

        # hand-off: (namespace, name) -> latest Signal, in first-arrival order
        self._signals: dict[tuple[str, str], Signal] = {}
        self._readable = asyncio.Event()
        self._space = asyncio.Event()

        # add/remove pause the wait (see _modify)
        self._modify_lock = asyncio.Lock()
        self._pauses = 0
        self._resume = asyncio.Event()
        self._resume.set()
        self._idle = asyncio.Event()  # set while no WaitForUpdatesEx is in flight
        self._idle.set()
        self._long_wait = False

        # test hook: sync() asks for zero-wait polls until vCenter has nothing left
        self._flush_requested = 0
        self._flush_done = 0
        self._progress = asyncio.Event()

        self.version = ''
        """The version of the last processed update set ('' before the first)."""
        self.stats: Counter[str] = Counter()
        """batches, heartbeats, truncated, objects, changes, signals, coalesced, name_fetches, name_fetch_vms,
        resyncs, skips by reason (skipped_<reason>), bad_updates (object updates skipped as undecodable) and
        missing_<fault> (missingSet entries by fault type)."""

    # -- lifecycle --------------------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def start(self) -> Self:
        """Log in (when owning the session), create the views and filter, and start the wait loop."""
        if self._main is not None or self._stopping:
            raise RuntimeError('a Watcher starts once; make a new one to restart')
        if self._slot is not None and self._slot.disabled:
            raise AsyncSignalDisabledError()
        try:
            self._views, self._collector = await self._connect()
        except BaseException:
            self._stopping = True
            self._loop_exited.set()
            self._done.set()
            raise
        self._poll_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix='vmwatch-wait')
        if self._slot is not None:
            self._slot._put(self)
        self._main = asyncio.create_task(self._run(), name='vmwatch-watcher')
        if self._keepalive_s > 0:
            self._keepalive_task = asyncio.create_task(self._keepalive(), name='vmwatch-keepalive')
        log.info('watching %d containers', len(self._containers))
        return self

    async def _connect(self) -> tuple[Views, Collector]:
        """Log in when owning the session; create collector, views and filter; the raw-wait connection."""
        try:
            if self._owns_session:
                await asyncio.to_thread(self._session.login)
            views = Views(self._session, watched_paths=self.filter_settings.watched_paths)
            await asyncio.to_thread(views.open, self._containers)
        except BaseException:
            if self._owns_session:
                await asyncio.to_thread(self._session.logout)
            raise
        s = self.settings
        collector = Collector(
            self._session,
            views.collector_id,
            max_object_updates=s.max_object_updates,
            read_timeout_s=s.max_wait_s + max(1.0, s.http_timeout_margin_s),
            max_response_bytes=s.max_response_bytes,
        )
        return views, collector

    async def aclose(self) -> None:
        """Stop: cancel the wait, destroy views, filter and collector, log out when owning the session.

        Idempotent. Pending signals stay readable. A failure that had already ended the watcher stays in
        `error`; closing never raises it.
        """
        if self._main is None:
            self._stopping = True
            self._done.set()
            return
        self._request_stop(None)
        await asyncio.shield(self._main)

    @property
    def running(self) -> bool:
        return self._main is not None and not self._stopping

    @property
    def error(self) -> BaseException | None:
        """Why the watcher stopped; None while running or after a clean close."""
        return self._error

    async def wait_closed(self) -> BaseException | None:
        """Wait until the watcher has stopped and cleaned up; returns `error`."""
        await self._done.wait()
        return self._error

    def owners(self) -> dict[MoRef, frozenset[str]]:
        """Watched containers and their owner IDs."""
        return self._views.owners() if self._views is not None else {}

    # -- add / remove -----------------------------------------------------------------------------------------

    async def add(self, ref: RefLike, owner_id: str) -> None:
        """Watch container `ref` on behalf of `owner_id` (idempotent per owner; spec 1.2)."""
        ref = MoRef.parse(ref)
        if self._check_running().add_owner(ref, owner_id):
            return  # already watched: no ListView change, so the wait in flight goes on undisturbed
        await self._modify(lambda v: v.add(ref, owner_id))

    async def remove(self, ref: RefLike, owner_id: str) -> None:
        """Drop `owner_id` from `ref`; the last owner stops watching it. Unknown refs/owners: no-op."""
        ref = MoRef.parse(ref)
        if self._check_running().drop_owner(ref, owner_id):
            return  # other owners remain (or nothing to do): vCenter keeps watching, the wait goes on
        await self._modify(lambda v: v.remove(ref, owner_id))

    def _check_running(self) -> Views:
        if self._views is None:
            raise RuntimeError('the watcher has not been started')
        if self._stopping:
            raise NoWatcherError('no watcher: this watcher has stopped') from self._error
        return self._views

    async def _modify(self, fn: Callable[[Views], bool]) -> None:
        """Run a ListView change. With pause_wait_on_modify, no WaitForUpdatesEx is in flight meanwhile.

        vcsim <= v0.56.0 can deadlock when ModifyListView runs concurrently with a WaitForUpdatesEx whose
        filter re-syncs its traversal (govmomi PR #4109, spec 8.1). Pausing costs one CancelWaitForUpdates
        and one re-issued wait per change; no update is lost, the next wait returns it.
        """
        views = self._check_running()
        async with self._modify_lock:
            views = self._check_running()
            if not self._pause_on_modify:
                await asyncio.to_thread(fn, views)
                return
            self._pauses += 1
            self._resume.clear()
            try:
                await self._until_idle()
                self._check_running()
                await asyncio.to_thread(fn, views)
            finally:
                self._pauses -= 1
                if self._pauses == 0:
                    self._resume.set()

    async def _until_idle(self) -> None:
        """Cancel the in-flight wait (again if it raced) until the loop is parked or gone."""
        assert self._collector is not None
        while not self._idle.is_set() and not self._loop_exited.is_set():
            if self._long_wait:
                await asyncio.to_thread(self._collector.cancel)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), 0.25)

    # -- consuming --------------------------------------------------------------------------------------------

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Signal:
        """The next signal. At the end: StopAsyncIteration after a clean close, else the error, once."""
        while True:
            if self._signals:
                return self._pop()
            if self._done.is_set() or (self._stopping and self._main is None):
                if self._error is not None and not self._error_raised:
                    self._error_raised = True
                    raise self._error
                raise StopAsyncIteration
            self._readable.clear()
            await self._readable.wait()

    def _pop(self) -> Signal:
        key = next(iter(self._signals))
        signal = self._signals.pop(key)
        self.responses.take(key)
        self._space.set()
        if self._deliver_on_take:
            self.decider.delivered(signal.moref, signal.digest)
        return signal

    def drain(self) -> list[Signal]:
        """Take every signal waiting now, without blocking."""
        out = list(self._signals.values())
        self._signals.clear()
        self.responses.clear()
        self._space.set()
        if self._deliver_on_take:
            for signal in out:
                self.decider.delivered(signal.moref, signal.digest)
        return out

    @property
    def pending(self) -> int:
        """Signals waiting to be taken."""
        return len(self._signals)

    @property
    def synced(self) -> bool:
        """True once a complete initial sync (every truncated page of it) was processed."""
        return self._synced

    async def _put(self, signal: Signal) -> None:
        key = (signal.namespace, signal.name)
        if key in self._signals:
            self._signals[key] = signal  # keeps its place in line; the latest wins
            self.stats['coalesced'] += 1
        else:
            while len(self._signals) >= self._max_pending and not self._stopping:
                # more distinct VMs waiting than max_pending: let vCenter hold the rest (it coalesces too)
                self._space.clear()
                await self._space.wait()
            self._signals[key] = signal
        self.responses.put(key)
        self.stats['signals'] += 1
        self._readable.set()

    # -- test hook --------------------------------------------------------------------------------------------

    @property
    def batches(self) -> int:
        """WaitForUpdatesEx responses processed so far (heartbeats included)."""
        return self.stats['batches']

    async def wait_batches(self, n: int, *, timeout_s: float = 30.0) -> None:
        """Wait until at least `n` responses were processed (or the watcher stopped)."""
        async with asyncio.timeout(timeout_s):
            while self.batches < n and not self._loop_exited.is_set():
                await self._progress_wait()

    async def sync(self, *, timeout_s: float = 30.0) -> None:
        """Wait until every change vCenter had queued for this watcher when called was processed.

        The in-flight long poll is cancelled and replaced by a zero-wait poll (and the pages that follow
        it): once that is processed, each change made before this call has been decided and its signal,
        if any, is in the hand-off. Changes made meanwhile may or may not be included. For negative
        assertions without sleeping. Raises the watcher's error if it stopped.
        """
        self._flush_requested += 1
        target = self._flush_requested
        assert self._collector is not None
        async with asyncio.timeout(timeout_s):
            while self._flush_done < target:
                if self._loop_exited.is_set():
                    raise self._error or NoWatcherError('no watcher: this watcher has stopped')
                if self._long_wait:
                    await asyncio.to_thread(self._collector.cancel)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._progress_wait(), 0.25)

    async def _progress_wait(self) -> None:
        await self._progress.wait()

    def _made_progress(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()

    # -- the loop ---------------------------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._loop()
        except SessionError as e:
            self._set_error(e)
        except Exception as e:
            log.exception('the watcher failed unexpectedly')
            self._set_error(e)
        finally:
            self._stopping = True
            self._loop_exited.set()
            self._made_progress()
            if self._slot is not None:
                self._slot._clear(self)
            await self._cleanup()
            self._done.set()
            self._readable.set()
            self._made_progress()
            if self._error is not None:
                log.warning('watcher stopped: %s', self._error)
            else:
                log.info('watcher stopped')

    def _set_error(self, e: BaseException) -> None:
        if self._error is None:
            self._error = e

    async def _cleanup(self) -> None:
        if self._keepalive_task is not None:
            self._keepalive_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keepalive_task
        views, collector = self._views, self._collector

        def cleanup() -> None:
            if collector is not None:
                collector.close()
            if views is not None:
                views.close()
            if self._owns_session:
                self._session.logout()

        try:
            await asyncio.shield(asyncio.to_thread(cleanup))
        except Exception:
            log.exception('cleaning up the watcher failed')
        if self._poll_pool is not None:
            self._poll_pool.shutdown(wait=False)

    def _request_stop(self, error: BaseException | None) -> None:
        if error is not None:
            self._set_error(error)
        if not self._stopping:
            self._stopping = True
            self._resume.set()
            self._space.set()
        if self._interrupter is None and self._main is not None:
            self._interrupter = asyncio.create_task(self._interrupt(hard=error is not None), name='vmwatch-interrupt')

    async def _interrupt(self, *, hard: bool) -> None:
        """Get the loop out of its wait: CancelWaitForUpdates, retried; then close the socket.

        `hard` (the session is known to be dead, so a cancel cannot work) closes the socket at once.
        Closing the socket also covers a server that ignores the cancel (vcsim's Logout does not wake a
        blocked wait).
        """
        assert self._collector is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (0 if hard else self._cancel_grace_s)
        while not self._loop_exited.is_set() and loop.time() < deadline:
            if not self._idle.is_set() and not await asyncio.to_thread(self._collector.cancel):
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._loop_exited.wait(), 0.25)
        if not self._loop_exited.is_set():
            self._collector.close()

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(self._keepalive_s)
            try:
                await asyncio.to_thread(self._session.keepalive)
            except SessionError as e:
                log.warning('keep-alive: %s', e)
                self._request_stop(e)
                return
            except VsphereFault as e:
                log.warning('keep-alive: %s', e)

    async def _loop(self) -> None:
        assert self._collector is not None
        version = ''
        while not self._stopping:
            if self._pauses:
                await self._resume.wait()
                continue
            target = self._flush_requested
            flushing = self._flush_done < target
            max_wait = 0 if flushing else self.settings.max_wait_s
            self._long_wait = not flushing
            self._idle.clear()
            try:
                outcome = await self._in_poll_thread(self._poll, version, max_wait)
            except SessionError:
                if self._stopping and self._error is None:
                    return  # interrupted by close()
                raise
            finally:
                self._idle.set()
                self._long_wait = False
            if isinstance(outcome, Fault):
                version = self._on_fault(outcome, version)
                continue
            if outcome.version is not None:
                version = outcome.version
            await self._process(outcome)
            if not self._synced and outcome.version is not None and not outcome.truncated:
                # every watched VM has been sighted: records loaded for VMs that no longer exist can go
                self._synced = True
                await self._in_poll_thread(self.decider.end_initial_sync)
            self.version = version
            self.stats['batches'] += 1
            if flushing and not outcome.truncated:
                # a zero-wait poll issued after sync() was called returned every change queued before it
                self._flush_done = target
            self._made_progress()

    async def _in_poll_thread(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._poll_pool is not None
        return await asyncio.get_running_loop().run_in_executor(self._poll_pool, functools.partial(fn, *args))

    def _poll(self, version: str, max_wait_s: int) -> Batch | Fault:
        """One WaitForUpdatesEx round trip and its decision (runs in a thread; the core releases the GIL)."""
        assert self._collector is not None
        body = self._collector.wait(version, max_wait_s=max_wait_s)
        self.responses.responded(body, self.stats)
        started = time.perf_counter()
        try:
            outcome = self.decider.decide(body)
        except DecodeError as e:
            raise ProtocolError(f'WaitForUpdatesEx: undecodable response ({len(body)} bytes): {e}') from e
        finally:
            self.decide_seconds.append(time.perf_counter() - started)
        if not isinstance(outcome, Fault):
            self.responses.decided(outcome.kinds, self.stats)
        return outcome

    def _on_fault(self, fault: Fault, version: str) -> str:
        kind = fault.fault_type
        if kind == 'RequestCanceled':
            return version  # close(), sync() or add/remove cancelled the wait; the loop decides what next
        if kind == 'InvalidCollectorVersion':
            # start over: vCenter re-sends every object as enter, the fingerprint cache absorbs the flood
            log.warning('WaitForUpdatesEx: InvalidCollectorVersion at %r: resyncing from scratch', version)
            self.stats['resyncs'] += 1
            return ''
        raise fault_error(kind, fault.message, call='WaitForUpdatesEx')

    async def _process(self, batch: Batch) -> None:
        st = self.stats
        if batch.version is None:
            st['heartbeats'] += 1
        if batch.truncated:
            st['truncated'] += 1
        st['objects'] += batch.objects
        st['changes'] += batch.changes
        for reason, n in batch.skipped.items():
            st[f'skipped_{reason}'] += n
        # undecodable object updates (skipped, their VMs forgotten) and what vCenter could not report
        PROBLEMS.report(bad=batch.bad, missing=batch.missing, stats=st, scope=id(self.decider))
        for signal in batch.signals:
            await self._put(signal)
        if batch.pending:
            for signal in await self._in_poll_thread(self._resolve, batch.pending):
                await self._put(signal)
        if batch.objects:
            log.debug(
                'batch %s: %d objects, %d signals, %d name fetches, skipped %s',
                batch.version,
                batch.objects,
                len(batch.signals),
                len(batch.pending),
                {k: n for k, n in batch.skipped.items() if n},
            )

    def _fetch_names(self, morefs: list[str]) -> NameFetch:
        return fetch_names(
            self._session, morefs, name_key=self.filter_settings.name_key, batch=self.settings.name_fetch_batch
        )

    def _resolve(self, pending: list[Pending]) -> list[Signal]:
        """Step G for one response: one batched name fetch, then the core finishes each VM (thread)."""
        st = self.stats
        morefs = list(dict.fromkeys(p.moref for p in pending))
        st['name_fetches'] += 1
        st['name_fetch_vms'] += len(morefs)
        try:
            fetched = self._fetch_names(morefs)
        except VsphereFault as e:
            # not a session problem: skip these VMs now, and forget them so their next change counts
            log.warning('name fetch for %d VMs failed, skipping them: %s', len(morefs), e)
            st['skipped_name_fetch_failed'] += len(morefs)
            for moref in morefs:
                self.decider.forget(moref)
            return []
        out: list[Signal] = []
        for p in pending:
            fault = fetched.skipped.get(p.moref)
            if fault is not None:
                log.debug('%s skipped: %s during the name fetch', p.moref, fault)
                st[f'skipped_{"vanished" if fault == "ManagedObjectNotFound" else "object_fault"}'] += 1
                self.decider.forget(p.moref)
                continue
            value = fetched.values.get(p.moref)
            parsed = parse_namespaced_name(value) if value else None
            namespace, name = parsed if parsed is not None else ('', '')
            signal = self.decider.resolve(p.moref, p.kind, p.changed, namespace, name)
            if signal is None:
                st['skipped_unresolved'] += 1
            else:
                out.append(signal)
        return out


class WatcherSlot:
    """The process-wide place of the running watcher, for the Zone controller (spec 1.2).

    `add` / `remove` / `close` raise AsyncSignalDisabledError when the feature is off (checked first),
    NoWatcherError when no watcher runs, and are serialised by one lock. A watcher puts itself here when
    it starts and takes itself out when it stops, only if the slot still holds it (spec 7.2 #7).
    """

    def __init__(self, *, disabled: bool | None = None) -> None:
        self.disabled = async_signal_disabled() if disabled is None else disabled
        self._watcher: Watcher | None = None
        self._lock = asyncio.Lock()

    @property
    def watcher(self) -> Watcher | None:
        return self._watcher

    def _current(self) -> Watcher:
        if self.disabled:
            raise AsyncSignalDisabledError()
        if self._watcher is None:
            raise NoWatcherError()
        return self._watcher

    async def add(self, ref: RefLike, owner_id: str) -> None:
        async with self._lock:
            await self._current().add(ref, owner_id)

    async def remove(self, ref: RefLike, owner_id: str) -> None:
        async with self._lock:
            await self._current().remove(ref, owner_id)

    async def close(self) -> None:
        """Stop the running watcher (it leaves the slot on its way out)."""
        async with self._lock:
            watcher = self._current()
            watcher._request_stop(None)
        await watcher.aclose()

    def _put(self, watcher: Watcher) -> None:
        self._watcher = watcher

    def _clear(self, watcher: Watcher) -> bool:
        """Compare-and-swap: empty the slot only if it still holds `watcher`."""
        if self._watcher is watcher:
            self._watcher = None
            return True
        return False
