# SPDX-License-Identifier: Apache-2.0
"""`vmwatch run`: the full service as a process (settings, health server, Lease, sink, bounded shutdown).

* Bad settings, a bad kubeconfig or a health address that cannot be bound exit 2 with one line.
* Only the Lease holder writes: it watches, reconciles Zones (finalizers) and runs the sink. A standby keeps
  its Zone cache and VirtualMachine index warm and writes nothing; when it becomes the holder, its Zone
  controller reconciles every Zone. Losing the Lease stops all three at once (`Leadership`).
* A sink that fails makes /readyz 503 and is restarted with backoff; a closed stdout (its reader went away)
  cannot come back, so the process exits 1.
* SIGTERM/SIGINT: stop watching, drain the queue into the sink for at most `--shutdown-grace-s`, write the
  last delivery checkpoint (still holding the Lease), release the Lease, exit (0 when everything was
  delivered, 1 when requests were left). A watchdog ends the process `_HARD_EXIT_MARGIN_S` after the grace,
  whatever is stuck.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vmwatch.settings import async_signal_disabled

# `vmwatch --help` and `vmwatch run --help` import this module for add_parser(): the service (the Kubernetes
# client, pyVmomi) and prometheus_client load only when the command runs.
if TYPE_CHECKING:
    from vmwatch.kube.leader import LeaderElector
    from vmwatch.kube.shards import ShardLeases
    from vmwatch.liveness import Heartbeat
    from vmwatch.metrics import HealthServer, Metrics
    from vmwatch.service import Service
    from vmwatch.settings import ServiceSettings

__all__ = ['Leadership', 'Replica', 'add_parser', 'run']

log = logging.getLogger('vmwatch.run')

_HARD_EXIT_MARGIN_S = 5.0
"""After the grace, cleanup (Lease release, watcher teardown, logout) gets this long before a hard exit."""


def add_parser(sub: Any) -> None:
    from vmwatch.settings import add_service_arguments

    p = sub.add_parser(
        'run',
        help='the full service: Zone controller, VirtualMachine index, watcher, enqueue',
        description='Every setting is a flag and a VMWATCH_* environment variable (flags win). '
        'ASYNC_SIGNAL_DISABLED=true (or ASYNC_SIGNAL_ENABLED=false) keeps the process up but idle.',
    )
    add_service_arguments(p)
    p.set_defaults(func=run)


def run(args: Any) -> int:
    """Exit 2 with one message for bad settings, a bad kubeconfig or an unusable health or metrics address;
    otherwise run until SIGTERM/SIGINT (exit 0, or 1 when requests were left undelivered or stdout was closed)."""
    from vmwatch.kube.crds import api_client
    from vmwatch.liveness import Heartbeat
    from vmwatch.logs import configure_logging
    from vmwatch.metrics import Metrics
    from vmwatch.settings import SettingsError, deprecated_names, load_service_settings

    try:
        settings = load_service_settings(args).validate().check_files()
        disabled = async_signal_disabled()
        if settings.sink == 'queue':
            raise SettingsError('--sink queue is for Python code embedding vmwatch.Service; use stdout or annotate')
    except SettingsError as e:
        print(f'vmwatch run: {e}', file=sys.stderr)
        return 2
    configure_logging(level=settings.log_level, json_format=settings.log_format == 'json')
    for warning in deprecated_names(args):
        log.warning('%s', warning)
    try:
        api = api_client(settings.kubeconfig)
    except Exception as e:  # a malformed kubeconfig raises many types; one clear message is the point
        print(f'vmwatch run: cannot load the Kubernetes configuration: {type(e).__name__}: {e}', file=sys.stderr)
        return 2
    metrics = Metrics()
    heartbeat = Heartbeat(stall_s=settings.liveness_stall_s)
    try:  # bound before anything starts, so a port in use is one line and exit 2
        servers = _listen(settings, metrics, heartbeat)
    except _ListenError as e:
        print(f'vmwatch run: {e}', file=sys.stderr)
        api.close()  # type: ignore[no-untyped-call]
        return 2
    try:
        import uvloop

        return int(uvloop.run(_serve(settings, api, disabled, metrics, servers, heartbeat)))
    except KeyboardInterrupt:
        return 0
    finally:
        for server in servers:
            server.close()
        api.close()  # type: ignore[no-untyped-call]


class _ListenError(Exception):
    """A probe or metrics address that cannot be bound (the message names the flag): exit 2."""


def _listen(settings: ServiceSettings, metrics: Metrics, heartbeat: Heartbeat) -> list[HealthServer]:
    """The probe server (first) and the metrics server, bound; one server for both when their addresses are the
    same, none for /metrics when --metrics-bind-address is 0."""
    from vmwatch.metrics import HealthServer
    from vmwatch.settings import parse_host_port

    host, port = parse_host_port('--health-probe-bind-address', settings.health_probe_bind_address)
    shared = settings.metrics_bind_address != '0' and (
        parse_host_port('--metrics-bind-address', settings.metrics_bind_address) == (host, port) and port != 0
    )
    servers: list[HealthServer] = []
    try:
        flag, address = '--health-probe-bind-address', settings.health_probe_bind_address
        servers.append(HealthServer(host=host or '0.0.0.0', port=port, metrics=metrics if shared else None,
                                    ready=lambda: (False, 'starting'), alive=heartbeat.alive))  # fmt: skip
        if settings.metrics_bind_address != '0' and not shared:
            flag, address = '--metrics-bind-address', settings.metrics_bind_address
            m_host, m_port = parse_host_port(flag, address)
            servers.append(HealthServer(host=m_host or '0.0.0.0', port=m_port, metrics=metrics,
                                        ready=lambda: (False, 'starting'), probes=False))  # fmt: skip
    except (OSError, OverflowError) as e:
        for server in servers:
            server.close()
        raise _ListenError(f'cannot listen on {flag} {address}: {e}') from None
    return servers


class Leadership:
    """What only a shard's Lease holder does: watch its vCenter, reconcile its Zones. The sink and the Zone
    controller's workers run while this replica holds at least one shard. `lead(shard)` is the shard
    elector's work (cancelled when its Lease is lost or handed over); without leader election it runs for
    every shard for the life of the process."""

    def __init__(self, service: Service, sink: Any, *, metrics: Metrics) -> None:
        from vmwatch.kube.sinks import SinkRunner

        self.service = service
        self.sink: SinkRunner = sink
        self.metrics = metrics
        self.held: set[str] = set()
        self.handing_over: Callable[[str], bool] = lambda shard: False  # True: a voluntary hand-over (ShardLeases)

    @property
    def leading(self) -> bool:
        return bool(self.held)

    async def lead(self, name: str) -> None:
        shard = self.service.shards[name]
        self.metrics.leader.labels(name=shard.lease_name).set(1)
        shard.metrics.held.set(1)
        first = not self.held
        self.held.add(name)
        if first:
            self.service.zones.start_reconciling()
            self.sink.start()
        shard.held = True  # the Zone controller writes for this vCenter's Zones from now on
        self.service.zones.requeue_all()  # the Zones of this vCenter (the others are skipped)
        try:
            await self._finalizers_first(name)
            shard.start_watching()
            await asyncio.Event().wait()  # until the Lease is lost or the process stops (this task is cancelled)
        finally:
            shard.held = False  # no Zone write for this vCenter from now on
            self.metrics.leader.labels(name=shard.lease_name).set(0)
            shard.metrics.held.set(0)
            self.held.discard(name)
            if not self.held:  # writes first: the request being delivered goes back to the queue
                await self.sink.stop()
                await self.service.zones.stop_reconciling()
            await shard.stop_watching()
            if self.handing_over(name):  # still holding the Lease: the next holder starts from here
                await shard.save_checkpoint()

    async def _finalizers_first(self, name: str, timeout_s: float = 5.0) -> None:
        """Give the Zone controller up to `timeout_s` to add the missing finalizers of this vCenter's Zones
        before its watcher gathers its folders (which adds them too): two writers of one Zone's finalizers
        would meet in a 409."""
        from vmwatch.kube.zones import finalizers, folder_of, is_deleting
        from vmwatch.settings import FINALIZER

        cache = self.service.zones.cache
        router = self.service.router
        deadline = time.monotonic() + timeout_s
        if not await asyncio.to_thread(cache.wait_synced, timeout_s):
            return
        while time.monotonic() < deadline and any(
            router.zone_vcenter(z) == name and folder_of(z) and not is_deleting(z) and FINALIZER not in finalizers(z)
            for z in cache.zones()
        ):
            await asyncio.sleep(0.02)


def _hard_exit_after(delay_s: float) -> None:
    """A daemon timer that ends the process if the shutdown has not finished after `delay_s`."""

    def fire() -> None:
        log.error('shutdown did not finish within %.1f s: exiting now', delay_s)
        logging.shutdown()
        os._exit(1)

    timer = threading.Timer(delay_s, fire)
    timer.daemon = True
    timer.start()


class Replica:
    """One `vmwatch run` process's parts: the service, its sink, the Lease elector and the Leadership gating
    every write. `start()` campaigns (or leads at once without leader election); `stop()` drains and stops."""

    def __init__(
        self,
        settings: ServiceSettings,
        api: Any,
        *,
        metrics: Metrics,
        disabled: bool,
        on_closed: Callable[[BaseException], None] | None = None,
        identity: str | None = None,
    ) -> None:
        from vmwatch.kube.leader import LeaseSettings
        from vmwatch.kube.shards import ShardLeases
        from vmwatch.kube.sinks import AnnotateSink, SinkRunner, StdoutSink
        from vmwatch.service import Service

        self.settings = settings
        # with leader election, the Zone controller runs only while this replica holds the Lease (Leadership)
        self.service = Service(
            settings, api=api, metrics=metrics, disabled=disabled, zone_controller=not settings.leader_elect
        )
        sink: Any
        if settings.sink == 'annotate':
            sink = AnnotateSink(api, annotation=settings.annotation, workers=settings.workers)
        elif settings.sink == 'cloudevents':
            from vmwatch.cloudevents_sink import CloudEventsSink, event_source

            service = self.service
            sources = {vc.name: event_source(vc.url) for vc in (s.vcenter for s in service.shards.values())}
            sink = CloudEventsSink(
                settings.sink_url,
                source=next(iter(sources.values())) if len(sources) == 1 else f'/vmwatch/{settings.lease_name}',
                details=service.signals,
                source_of=lambda signal: sources.get(service.vcenter_of(signal), ''),
                ca_file=settings.sink_ca_file,
                workers=settings.workers,
            )
        else:
            sink = StdoutSink()
        self.sinks = SinkRunner(sink, self.service.queue, on_closed=on_closed, on_failure=metrics.sink_failures.inc)
        self.leadership = Leadership(self.service, self.sinks, metrics=metrics)
        self.leases: ShardLeases | None = None
        if settings.leader_elect:
            self.leases = ShardLeases(
                api,
                namespace=settings.resolved_lease_namespace(),
                lease_name=settings.lease_name,
                shards=[(name, shard.lease_name) for name, shard in self.service.shards.items()],
                identity=identity,
                settings=LeaseSettings(
                    lease_duration_s=settings.lease_duration_s,
                    renew_deadline_s=settings.renew_deadline_s,
                    retry_period_s=settings.retry_period_s,
                ),
                on_new_leader=lambda shard, holder: metrics.set_lease_holder(
                    self.service.shards[shard].lease_name, holder
                ),  # fmt: skip
                on_replicas=metrics.replicas.set,
            )
            electors = self.leases.electors
            self.leadership.handing_over = lambda shard: electors[shard].stepping_down
        self._task: asyncio.Future[Any] | None = None
        self._stopped: bool | None = None  # stop()'s result once it ran

    @property
    def elector(self) -> LeaderElector | None:
        """The one shard's elector (None without leader election; ValueError with several vCenters)."""
        if self.leases is None:
            return None
        if len(self.leases.electors) != 1:
            raise ValueError('several vCenters: use leases.electors[name]')
        return next(iter(self.leases.electors.values()))

    def ready(self) -> tuple[bool, str]:
        ok, reason = self.sinks.ready()
        if not ok:
            return ok, reason
        if self.leases is not None and not self.leadership.leading:
            electors = self.leases.electors
            if len(electors) == 1:
                return True, f'standby: not the leader (holder: {next(iter(electors.values())).leader or "none"})'
            holders = ', '.join(f'{n}: {e.leader or "none"}' for n, e in electors.items())
            return True, f'standby: holding no vCenter (holders: {holders})'
        return self.service.ready()

    def ready_detail(self) -> list[tuple[str, bool, str]]:
        """(check, ok, reason) lines of /readyz?verbose: the sink, then each vCenter."""
        ok, reason = self.sinks.ready()
        lines = [('sink', ok, reason)]
        for check, shard_ok, shard_reason in self.service.ready_detail():
            name = check.removeprefix('vcenter ')
            if self.leases is not None and name not in self.leadership.held:
                holder = self.leases.electors[name].leader or 'none'
                shard_ok, shard_reason = True, f'standby (holder: {holder})'
            lines.append((check, shard_ok, shard_reason))
        return lines

    async def start(self, *, release: bool = True) -> None:
        """Start the caches (every replica keeps them warm) and campaign for the shard Leases (`release=False`:
        the Leases are kept on stop and expire, as after a crash)."""
        await self.service.start()
        lead = self.leadership.lead
        if self.leases is not None:
            self._task = asyncio.create_task(self.leases.run(lead, release=release), name='vmwatch-leases')
        else:
            self._task = asyncio.ensure_future(asyncio.gather(*(lead(name) for name in self.service.shards)))

    async def stop(self, *, grace_s: float = 0.0) -> bool:
        """Stop watching, drain the queue into the sink for at most `grace_s` (only a holder runs a sink),
        step down and stop (once). True when no request was left undelivered."""
        if self._stopped is not None:
            return self._stopped
        self._stopped = False
        held = [s for s in self.service.shards.values() if s.held]
        await self.service.stop_watching()  # no new requests
        delivered = await _drain(self.service, self.sinks, grace_s)
        for shard in held:  # still the Lease holder: the last checkpoint records the deliveries of the drain
            await shard.save_checkpoint()
        if self._task is not None:
            if self.leases is not None:
                self.leases.stop()  # cancels lead() and releases the Leases
            else:
                self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.sinks.stop()
        await self.service.stop()
        self._stopped = delivered
        return delivered


async def _serve(
    settings: ServiceSettings,
    api: Any,
    disabled: bool,
    metrics: Metrics,
    servers: list[HealthServer],
    heartbeat: Heartbeat,
) -> int:
    import signal as signals

    exit_code = 0
    stop = asyncio.Event()

    def closed(e: BaseException) -> None:
        nonlocal exit_code
        exit_code = 1
        stop.set()

    replica = Replica(settings, api, metrics=metrics, disabled=disabled, on_closed=closed)
    beating = asyncio.create_task(heartbeat.run(), name='vmwatch-heartbeat')
    for server in servers:
        server.ready, server.before_scrape = replica.ready, replica.service.refresh_metrics
        server.detail = replica.ready_detail
        server.start()
        what = {True: 'health probes and metrics', False: 'health probes'} if server.probes else {True: 'metrics'}
        log.info('%s on %s:%d', what[server.metrics is not None], *server.address)
    if len(servers) == 1 and servers[0].metrics is None:
        log.info('metrics off (--metrics-bind-address 0)')
    loop = asyncio.get_running_loop()
    for sig in (signals.SIGTERM, signals.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await replica.start()
    try:
        await stop.wait()
    finally:
        _hard_exit_after(settings.shutdown_grace_s + _HARD_EXIT_MARGIN_S)
        log.info('stopping: draining the queue for at most %.1f s', settings.shutdown_grace_s)
        if not await replica.stop(grace_s=settings.shutdown_grace_s):
            exit_code = 1
        beating.cancel()
    return exit_code


async def _drain(service: Service, sinks: Any, grace_s: float) -> bool:
    """Hand what is queued to the sink for at most `grace_s`; True when nothing was left undelivered."""
    queue = service.queue
    started = time.monotonic()
    delivered = True
    if sinks.running and grace_s > 0:
        try:
            await asyncio.wait_for(queue.shutdown(drain=True), timeout=grace_s)
        except TimeoutError:
            delivered = False
    left = queue.depth + queue.in_flight
    delivered = delivered and left == 0
    if not delivered and not sinks.running:
        log.warning('%d requests not delivered (no sink runs: %s): dropped', left, sinks.ready()[1])
    elif not delivered:
        log.warning('%d requests not delivered within the %.1f s shutdown grace: dropped', left, grace_s)
    elif grace_s > 0:
        log.info('queue drained in %.2f s', time.monotonic() - started)
    await queue.shutdown(drain=False)
    return delivered
