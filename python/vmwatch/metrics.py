# SPDX-License-Identifier: Apache-2.0
"""Prometheus metrics and the health endpoints (/healthz, /readyz, /metrics) of the service.

Names follow client-go's workqueue metrics and controller-runtime's leader-election gauge where they
overlap; vmwatch's own are prefixed `vmwatch_`, with units in their names and `_total` on counters. Each
service instance owns a registry, so tests can run several services in one process; it carries the
process_* and python_* collectors as the default registry does. No `*_created` series is exported: the
exposition leaves them out for this registry only (prometheus_client's `disable_created_metrics()` is
process-global and would change the series of an operator embedding vmwatch).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric

if TYPE_CHECKING:
    from vmwatch.kube.listwatch import BadObjects
    from vmwatch.queue import WorkQueue

__all__ = ['CheckpointMetrics', 'HealthServer', 'Metrics', 'ShardMetrics']

_LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# Watcher.stats keys copied into per-vCenter counters at each scrape (ShardMetrics.observe_watcher); the
# object update kinds go to vmwatch_object_updates_total{kind}
_WATCHER_COUNTERS = ('batches', 'truncated', 'resyncs', 'decoded_bytes', 'name_fetches')
_KINDS = ('enter', 'modify', 'leave')


def _copy_count(counter: Any, key: str, value: int, seen: dict[str, int]) -> None:
    """Advance `counter` to a watcher's cumulative count `value`; `seen[key]` is what was copied before."""
    delta = value - seen.get(key, 0)
    if delta > 0:
        counter.inc(delta)
        seen[key] = value


class _WithoutCreated:
    """A registry's families without their `*_created` samples (what `generate_latest` reads)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        for family in self._registry.collect():
            family.samples = [s for s in family.samples if not s.name.endswith('_created')]
            yield family


class Metrics:
    """Every metric vmwatch exports, registered in one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        if registry is None:
            registry = CollectorRegistry()
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)
        self.registry = r = registry
        # per vCenter (label vcenter): its shard's watcher, fingerprint cache and index (Metrics.shard)
        v = ['vcenter']
        self.watcher_restarts = Counter(
            'vmwatch_watcher_restarts', 'Watcher restarts by cause.', [*v, 'cause'], registry=r
        )
        self.batches = Counter('vmwatch_batches', 'WaitForUpdatesEx responses decoded.', v, registry=r)
        self.object_updates = Counter(
            'vmwatch_object_updates', 'Object updates decoded, by kind (enter, modify, leave).', [*v, 'kind'],
            registry=r,
        )  # fmt: skip
        self.signals = Counter(
            'vmwatch_signals', 'Signals emitted (real changes), by reason (changed, entered, left, undelivered).',
            [*v, 'reason'], registry=r,
        )  # fmt: skip
        self.decoded_bytes = Counter(
            'vmwatch_decoded_bytes', 'Bytes of WaitForUpdatesEx responses decoded.', v, registry=r
        )
        self.truncated = Counter(
            'vmwatch_truncated_pages', 'WaitForUpdatesEx responses truncated by maxObjectUpdates (more follow).', v,
            registry=r,
        )  # fmt: skip
        self.resyncs = Counter(
            'vmwatch_resyncs', 'Restarts from scratch after InvalidCollectorVersion (vCenter re-sends every object).',
            v, registry=r,
        )  # fmt: skip
        self.enqueue_seconds = Histogram(
            'vmwatch_change_enqueue_seconds',
            'From the arrival of the WaitForUpdatesEx response carrying a change to its request entering the queue.',
            v, buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.version_lag = Gauge(
            'vmwatch_collector_version_lag_seconds',
            'Seconds since the last WaitForUpdatesEx response (at most max_wait while healthy), held shards only.',
            v, registry=r,
        )  # fmt: skip
        self.skipped = Counter(
            'vmwatch_skipped', 'Object updates that did not signal, by reason.', [*v, 'reason'], registry=r
        )
        self.validation_gets = Counter(
            'vmwatch_validation_gets', 'VirtualMachine GETs for signals the index did not have (yet).', v, registry=r
        )
        self.name_fetches = Counter('vmwatch_name_fetches', 'RetrievePropertiesEx calls fetching VM names.', v,
                                    registry=r)  # fmt: skip
        self.batch_seconds = Histogram(
            'vmwatch_batch_duration_seconds', 'Decode + decide time per response.', v, buckets=_LATENCY_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.last_wait = Gauge(
            'vmwatch_last_successful_wait_timestamp_seconds',
            'Unix time of the last WaitForUpdatesEx answered without error.',
            v,
            registry=r,
        )
        self.cache_hits = Counter('vmwatch_cache_hits', 'Fingerprint cache hits.', v, registry=r)
        self.cache_misses = Counter('vmwatch_cache_misses', 'Fingerprint cache misses.', v, registry=r)
        self.cache_evictions = Counter(
            'vmwatch_cache_evictions', 'Fingerprint cache evictions (LRU or TTL).', v, registry=r
        )
        self.cache_items = Gauge('vmwatch_cache_items', 'VMs in the fingerprint cache.', v, registry=r)
        self.cache_bytes = Gauge('vmwatch_cache_bytes', 'Approximate bytes held by the fingerprint cache.', v,
                                 registry=r)  # fmt: skip
        self.index_size = Gauge('vmwatch_index_size', 'VirtualMachines in the index.', v, registry=r)
        self.index_bytes = Gauge('vmwatch_index_bytes', 'Approximate bytes held by the index.', v, registry=r)
        self.shard_held = Gauge(
            'vmwatch_shard_held', "1 while this replica holds the vCenter's shard Lease (and watches it).", v,
            registry=r,
        )  # fmt: skip
        self.zones_unrouted = Gauge(
            'vmwatch_zones_unrouted', 'Zones naming no configured vCenter (reported, not watched).', registry=r
        )
        self.replicas = Gauge('vmwatch_replicas', 'Live replicas sharing the vCenters (membership Leases).',
                              registry=r)  # fmt: skip
        # client-go workqueue names
        self.queue_depth = Gauge('workqueue_depth', 'Current depth of the work queue.', ['name'], registry=r)
        self.queue_adds = Counter('workqueue_adds', 'Adds handled by the work queue.', ['name'], registry=r)
        self.queue_latency = Histogram(
            'workqueue_queue_duration_seconds',
            'Time an item waits before it is handled.',
            ['name'],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.work_duration = Histogram(
            'workqueue_work_duration_seconds', 'Time handling one item.', ['name'], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.queue_retries = Counter('workqueue_retries', 'Rate-limited retries.', ['name'], registry=r)
        self.queue_unfinished = Gauge(
            'workqueue_unfinished_work_seconds',
            'Seconds of work in progress not yet observed by work_duration (the sum of the age of items being '
            'processed); large values mean stuck workers.',
            ['name'], registry=r,
        )  # fmt: skip
        self.queue_longest = Gauge(
            'workqueue_longest_running_processor_seconds',
            'Seconds the longest-running item being processed has been at it.', ['name'], registry=r,
        )  # fmt: skip
        # controller-runtime's leader-election gauge
        self.leader = Gauge(
            'leader_election_master_status', '1 while this replica holds the Lease.', ['name'], registry=r
        )
        self.lease_holder = Gauge(
            'vmwatch_lease_holder', '1 for the identity currently holding each Lease.', ['name', 'identity'], registry=r
        )
        self._holders: dict[str, str] = {}
        self.checkpoint = CheckpointFamilies(r)
        self.sink_failures = Counter(
            'vmwatch_sink_failures', 'Times the sink failed and was restarted (or, stdout closed, ended).', registry=r
        )

        self._queues: dict[str, tuple[WorkQueue, dict[str, int]]] = {}
        # the Kubernetes feeds and the work queue refusing input (issue 11 A3, A6)
        self.bad_objects = Counter(
            'vmwatch_bad_objects',
            'Kubernetes objects a feed skipped or clamped (by resource and reason); each is logged once.',
            ['resource', 'reason'],
            registry=r,
        )
        self.dropped = Counter(
            'vmwatch_requests_dropped',
            'Reconcile requests the work queue refused (full); the VM is forgotten, so its next change signals.',
            ['name'],
            registry=r,
        )
        # what a response carried that the watcher could not use (vmwatch/problems.py)
        self.bad_object_updates = Counter(
            'vmwatch_bad_object_updates', 'Object updates skipped because they could not be decoded.', v, registry=r
        )
        self.missing_properties = Counter(
            'vmwatch_missing_properties',
            'missingSet entries: properties (or objects) vCenter could not report, by fault type.',
            [*v, 'fault'],
            registry=r,
        )
        self._shards: dict[str, ShardMetrics] = {}

    def shard(self, vcenter: str) -> ShardMetrics:
        """The metrics of one vCenter's shard (created at first use, the same object after)."""
        if vcenter not in self._shards:
            self._shards[vcenter] = ShardMetrics(self, vcenter)
        return self._shards[vcenter]

    def watch_queue(self, name: str, queue: WorkQueue) -> None:
        """Export `queue` as client-go's workqueue_* series with label name=`name`: latencies and work
        durations as they happen, depth, adds and retries at every scrape (`observe_queues`)."""
        qm = queue.metrics
        qm.on_latency_s = self.queue_latency.labels(name=name).observe
        qm.on_work_s = self.work_duration.labels(name=name).observe
        self._queues[name] = (queue, {'adds': qm.adds, 'retries': qm.retries})
        self.queue_adds.labels(name=name)  # the series exist (at 0) before the first add
        self.queue_retries.labels(name=name)

    def observe_queues(self) -> None:
        for name, (queue, seen) in self._queues.items():
            self.queue_depth.labels(name=name).set(len(queue))
            ages = queue.processing_ages_s()
            self.queue_unfinished.labels(name=name).set(sum(ages))
            self.queue_longest.labels(name=name).set(max(ages, default=0.0))
            for key, counter in (('adds', self.queue_adds), ('retries', self.queue_retries)):
                value = getattr(queue.metrics, key)
                if value > seen[key]:
                    counter.labels(name=name).inc(value - seen[key])
                    seen[key] = value

    def set_lease_holder(self, lease: str, identity: str | None) -> None:
        before = self._holders.pop(lease, None)
        if before is not None:
            self.lease_holder.remove(lease, before)
        if identity:
            self._holders[lease] = identity
            self.lease_holder.labels(name=lease, identity=identity).set(1)

    def exposition(self) -> bytes:
        return generate_latest(_WithoutCreated(self.registry))

    def watch_feed(self, resource: str, bad_objects: BadObjects) -> None:
        """Count `bad_objects`' reports (a ListWatch's) as vmwatch_bad_objects_total{resource=`resource`}."""
        counter = self.bad_objects
        bad_objects.on_bad = lambda reason: counter.labels(resource=resource, reason=reason).inc()


class ShardMetrics:
    """One vCenter's series: the labelled children of Metrics' per-vCenter families (label vcenter=NAME)."""

    def __init__(self, metrics: Metrics, vcenter: str) -> None:
        m, self.vcenter = metrics, vcenter
        self.batches = m.batches.labels(vcenter)
        self.enqueue_seconds = m.enqueue_seconds.labels(vcenter)
        self.validation_gets = m.validation_gets.labels(vcenter)
        self.name_fetches = m.name_fetches.labels(vcenter)
        self.batch_seconds = m.batch_seconds.labels(vcenter)
        self.last_wait = m.last_wait.labels(vcenter)
        self.index_size = m.index_size.labels(vcenter)
        self.index_bytes = m.index_bytes.labels(vcenter)
        self.held = m.shard_held.labels(vcenter)
        self.bad_object_updates = m.bad_object_updates.labels(vcenter)
        self.dropped = m.dropped.labels(name='virtualmachine')
        self.checkpoint = CheckpointMetrics(m.checkpoint, vcenter)
        self._m = m
        self._counters = {key: getattr(m, key).labels(vcenter) for key in _WATCHER_COUNTERS}
        self._counters.update({f'objects_{kind}': m.object_updates.labels(vcenter, kind) for kind in _KINDS})
        self._cache_seen: dict[str, int] = {}

    def restart(self, cause: str) -> None:
        self._m.watcher_restarts.labels(self.vcenter, cause).inc()

    def signal(self, reason: str) -> None:
        self._m.signals.labels(self.vcenter, reason).inc()

    def observe_watcher(self, stats: Mapping[str, int], seen: dict[str, int]) -> bool:
        """Copy a watcher's counts (batches, truncated, resyncs, decoded_bytes, name_fetches, objects by kind)
        into their counters; `seen` as in observe_problems. True when a response was processed since."""
        batches = seen.get('batches', 0)
        for key, counter in self._counters.items():
            _copy_count(counter, key, stats.get(key, 0), seen)
        return seen.get('batches', 0) > batches

    def observe_lag(self, lag_s: float | None) -> None:
        """Set vmwatch_collector_version_lag_seconds, or remove it (None: this replica does not watch)."""
        if lag_s is None:
            try:
                self._m.version_lag.remove(self.vcenter)
            except KeyError:
                pass
        else:
            self._m.version_lag.labels(self.vcenter).set(lag_s)

    def skipped(self, reason: str) -> None:
        self._m.skipped.labels(self.vcenter, reason).inc()

    def observe_cache(self, stats: dict[str, int]) -> None:
        """Copy Decider.cache_stats() (cumulative since the Decider was made) into the counters, and its size
        into the gauges."""
        m, v, seen = self._m, self.vcenter, self._cache_seen
        totals = {'hits': stats.get('hits', 0), 'misses': stats.get('misses', 0),
                  'evictions': stats.get('evicted', 0) + stats.get('expired', 0)}  # fmt: skip
        for key, counter in (('hits', m.cache_hits), ('misses', m.cache_misses), ('evictions', m.cache_evictions)):
            before = seen.get(key, 0)
            delta = totals[key] - before if totals[key] >= before else totals[key]  # a new Decider counts from 0
            if delta > 0:
                counter.labels(v).inc(delta)
            seen[key] = totals[key]
        m.cache_items.labels(v).set(stats.get('items', 0))
        m.cache_bytes.labels(v).set(stats.get('bytes', 0))

    def observe_skips(self, stats: Mapping[str, int], seen: dict[str, int]) -> None:
        """Copy a watcher's `skipped_<reason>` counts (the core's decisions: unchanged, ignored_only,
        verified_enter, delivered, ...) into vmwatch_skipped_total{reason}; `seen` as in observe_problems."""
        for key, value in list(stats.items()):
            if not key.startswith('skipped_'):
                continue
            if value > seen.get(key, 0):
                _copy_count(self._m.skipped.labels(self.vcenter, key.removeprefix('skipped_')), key, value, seen)

    def observe_problems(self, stats: Mapping[str, int], seen: dict[str, int]) -> None:
        """Copy a watcher's `bad_updates` and `missing_<fault>` counts (vmwatch/problems.py) into their
        counters. `seen` holds the values copied before from the same watcher (updated here)."""
        for key, value in list(stats.items()):  # one C call: the watcher may add keys meanwhile
            if key == 'bad_updates':
                counter = self.bad_object_updates
            elif key.startswith('missing_'):
                counter = self._m.missing_properties.labels(self.vcenter, key.removeprefix('missing_'))
            else:
                continue
            _copy_count(counter, key, value, seen)


class CheckpointFamilies:
    """The delivery checkpoints' series (kube/checkpoint.py), label vcenter."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r, v = registry, ['vcenter']
        self.writes = Counter('vmwatch_checkpoint_writes', 'Checkpoint writes by result.', [*v, 'result'], registry=r)
        self.records = Gauge('vmwatch_checkpoint_records', 'VMs in the last checkpoint written or loaded.', v,
                             registry=r)  # fmt: skip
        self.last_write = Gauge(
            'vmwatch_checkpoint_last_write_timestamp_seconds', 'Unix time of the last checkpoint written.', v,
            registry=r,
        )  # fmt: skip
        self.load_seconds = Gauge('vmwatch_checkpoint_load_seconds', 'Time the last checkpoint load took.', v,
                                  registry=r)  # fmt: skip


class CheckpointMetrics:
    """One shard's checkpoint series (what a Checkpointer updates)."""

    def __init__(self, families: CheckpointFamilies, vcenter: str) -> None:
        self.writes, self.vcenter = families.writes, vcenter
        self.records = families.records.labels(vcenter)
        self.last_write = families.last_write.labels(vcenter)
        self.load_seconds = families.load_seconds.labels(vcenter)

    def wrote(self, result: str) -> None:
        self.writes.labels(self.vcenter, result).inc()


class HealthServer:
    """/healthz (the process and its event loop are alive), /readyz (watching, or deliberately idle) and /metrics.

    `vmwatch run` serves the probes on one port and /metrics on another (controller-runtime's
    --health-probe-bind-address and --metrics-bind-address): `probes=False` serves /metrics alone, `metrics=None`
    the probes alone. `ready` and `alive` return (ok, reason); the reason is the body, e.g. 'watching',
    'standby: not the leader', 'disabled: ASYNC_SIGNAL_DISABLED', or why not ready (503) or not alive (500).
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        metrics: Metrics | None,
        ready: Callable[[], tuple[bool, str]],
        before_scrape: Callable[[], None] | None = None,
        probes: bool = True,
        alive: Callable[[], tuple[bool, str]] | None = None,
    ) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split('?', 1)[0]
                if path == '/healthz' and outer.probes:
                    ok, reason = outer.alive() if outer.alive is not None else (True, 'ok')
                    self._send(200 if ok else 500, reason.encode() + b'\n', 'text/plain')
                elif path == '/readyz' and outer.probes:
                    ok, reason = outer.ready()
                    body = reason.encode() + b'\n'
                    if 'verbose' in self.path.partition('?')[2].split('&') and outer.detail is not None:
                        lines = [f'[{"+" if c_ok else "-"}]{check} {"ok" if c_ok else "failed"}: {why}'
                                 for check, c_ok, why in outer.detail()]  # fmt: skip
                        verdict = 'readyz check passed' if ok else f'readyz check failed: {reason}'
                        body = '\n'.join([*lines, verdict, '']).encode()
                    self._send(200 if ok else 503, body, 'text/plain')
                elif path == '/metrics' and outer.metrics is not None:
                    if outer.before_scrape is not None:
                        outer.before_scrape()
                    self._send(200, outer.metrics.exposition(), CONTENT_TYPE_LATEST)
                else:
                    self._send(404, b'not found\n', 'text/plain')

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header('Content-Type', ctype)
                self.send_header('Content-Length', str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return  # probes every few seconds would flood the log

        self.probes = probes
        self.alive = alive
        self.metrics = metrics
        self.ready = ready
        self.detail: Callable[[], list[tuple[str, bool, str]]] | None = None  # /readyz?verbose: (check, ok, why)
        self.before_scrape = before_scrape
        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        name = 'vmwatch-health' if probes else 'vmwatch-metrics'
        self._thread = threading.Thread(target=self._server.serve_forever, name=name, daemon=True)
        self.started_at = time.time()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and release the port; a server never started only releases it (shutdown() would wait
        forever for a serve loop that never ran)."""
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
        if self._thread.ident is not None:
            self._thread.join(timeout=5)
