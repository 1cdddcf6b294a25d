# SPDX-License-Identifier: Apache-2.0
"""Shards spread over replicas by Kubernetes Leases alone (issue 12; design.md "Shards").

* Each vCenter's shard has its own Lease, taken and renewed by a `LeaderElector` as a single Lease is.
* Each replica renews a **membership Lease** `<lease-name>-member-<hash of identity>` (label
  `vmwatch.dev/member-of=<lease-name>`) every retry period. The live replicas R are the members whose record
  changed within the lease duration, on our monotonic clock (as client-go judges a Lease: no trust in other
  nodes' clocks). Expired members are deleted after a few lease durations, so they do not pile up.
* With N shards, a replica's share is ceil(N / R). A replica under its share may take free (or expired)
  shard Leases; one over it hands one shard over at a renewal boundary (the shard stops, its checkpoint is
  written, the Lease is released), one per tick, so the spread converges without thrash. Until its first
  membership tick a replica takes nothing (it does not know R yet).
* A replica that dies stops renewing both kinds of Lease: after one lease duration the others count one
  replica less, their share grows and they take its shards, which have expired by then.
* A replica holding no shard is a warm standby (caches warm, nothing written but its membership Lease).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from vmwatch.kube.leader import LeaderElector, LeaseSettings, _now, brief, default_identity
from vmwatch.settings import FIELD_MANAGER

__all__ = ['MEMBER_LABEL', 'Membership', 'ShardLeases']

log = logging.getLogger(__name__)

MEMBER_LABEL = 'vmwatch.dev/member-of'
_FORGET_AFTER_DURATIONS = 4
"""An expired membership Lease is deleted once it has not changed for this many lease durations."""


class Membership:
    """This replica's membership Lease, and the count of live replicas it sees."""

    def __init__(self, api: Any, *, namespace: str, lease_name: str, identity: str, settings: LeaseSettings) -> None:
        self.leases = client.CoordinationV1Api(api)
        self.namespace = namespace
        self.group = lease_name
        self.identity = identity
        self.settings = settings
        self.name = f'{lease_name}-member-{hashlib.sha256(identity.encode()).hexdigest()[:10]}'
        self.live = 0  # live replicas at the last tick (0: no tick succeeded yet)
        self._seen: dict[str, tuple[tuple[Any, ...], float]] = {}  # member -> (record, our time it changed)
        self._rv: str | None = None  # resourceVersion of our Lease as we last wrote it (None: create it)

    def tick(self, timeout_s: float) -> int:
        """Renew our Lease, list the members, forget long-expired ones; returns the live replicas (>= 1)."""
        self._renew(timeout_s)
        listed: Any = self.leases.list_namespaced_lease(
            self.namespace, label_selector=f'{MEMBER_LABEL}={self.group}', _request_timeout=timeout_s
        )
        now = time.monotonic()
        live = 0
        names = set()
        for lease in listed.items:
            name = lease.metadata.name
            names.add(name)
            spec = lease.spec
            record = (spec.holder_identity, spec.renew_time, spec.lease_duration_seconds)
            before = self._seen.get(name)
            changed_at = now if before is None or before[0] != record else before[1]
            self._seen[name] = (record, changed_at)
            duration = spec.lease_duration_seconds or self.settings.lease_duration_s
            if name == self.name or now - changed_at < duration:
                live += 1
            elif now - changed_at > _FORGET_AFTER_DURATIONS * duration:
                self._forget(name, lease.metadata.resource_version, timeout_s)
        for gone in set(self._seen) - names:
            del self._seen[gone]
        self.live = max(1, live)
        return self.live

    def _renew(self, timeout_s: float) -> None:
        """Create or update our membership Lease. An update must name the resourceVersion it replaces (the API
        server refuses unconditional updates of Leases): the one our last write returned, read again after a
        409 (someone else wrote it, e.g. a replica that forgot it while we were partitioned)."""
        body: Any = {
            'apiVersion': 'coordination.k8s.io/v1',
            'kind': 'Lease',
            'metadata': {'name': self.name, 'namespace': self.namespace, 'labels': {MEMBER_LABEL: self.group}},
            'spec': {
                'holderIdentity': self.identity,
                'leaseDurationSeconds': max(1, round(self.settings.lease_duration_s)),
                'renewTime': _now(),
            },
        }
        for attempt in range(2):
            try:
                if self._rv is None:
                    written = self.leases.create_namespaced_lease(
                        self.namespace, body, field_manager=FIELD_MANAGER, _request_timeout=timeout_s
                    )
                else:
                    body['metadata']['resourceVersion'] = self._rv
                    written = self.leases.replace_namespaced_lease(
                        self.name, self.namespace, body, field_manager=FIELD_MANAGER, _request_timeout=timeout_s
                    )
                self._rv = written.metadata.resource_version if written.metadata is not None else None
                return
            except ApiException as e:
                if e.status not in (404, 409) or attempt:
                    raise
                self._rv = self._read_rv(timeout_s)  # 409: another version is there; 404: it was deleted

    def _read_rv(self, timeout_s: float) -> str | None:
        try:
            lease: Any = self.leases.read_namespaced_lease(self.name, self.namespace, _request_timeout=timeout_s)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return str(lease.metadata.resource_version)

    def _forget(self, name: str, resource_version: str, timeout_s: float) -> None:
        with contextlib.suppress(ApiException):  # another replica deleted it first, or it was renewed: fine
            self.leases.delete_namespaced_lease(
                name, self.namespace, _request_timeout=timeout_s,
                body=client.V1DeleteOptions(preconditions=client.V1Preconditions(resource_version=resource_version)),
            )  # fmt: skip
        self._seen.pop(name, None)

    def leave(self, timeout_s: float = 5.0) -> None:
        """Delete our membership Lease (a clean stop): the others count one replica less at once."""
        with contextlib.suppress(ApiException):
            self.leases.delete_namespaced_lease(self.name, self.namespace, _request_timeout=timeout_s)


class ShardLeases:
    """One LeaderElector per shard, gated so that this replica holds at most its share of the shards."""

    def __init__(
        self,
        api: Any,
        *,
        namespace: str,
        lease_name: str,
        shards: Sequence[tuple[str, str]],
        identity: str | None = None,
        settings: LeaseSettings | None = None,
        on_new_leader: Callable[[str, str], None] | None = None,
        on_replicas: Callable[[int], None] | None = None,
    ) -> None:
        """`shards`: (shard name, its Lease name). With one shard there is no membership Lease (the share is 1
        whatever the number of replicas): the one Lease works exactly as plain leader election."""
        self.identity = identity or default_identity()
        self.settings = settings or LeaseSettings()
        self.on_replicas = on_replicas

        def announce(shard: str) -> Callable[[str], None] | None:
            if on_new_leader is None:
                return None
            callback = on_new_leader

            def announced(holder: str) -> None:
                callback(shard, holder)

            return announced

        self.electors: dict[str, LeaderElector] = {
            shard: LeaderElector(
                api,
                namespace=namespace,
                name=lease,
                identity=self.identity,
                settings=self.settings,
                may_acquire=self._may_acquire,
                on_new_leader=announce(shard),
            )
            for shard, lease in shards
        }
        self.membership: Membership | None = None
        if len(self.electors) > 1:
            self.membership = Membership(
                api, namespace=namespace, lease_name=lease_name, identity=self.identity, settings=self.settings
            )
        self._stop = asyncio.Event()

    @property
    def share(self) -> int:
        """The most shards this replica may hold now: ceil(N / live replicas); 0 before the first tick."""
        n = len(self.electors)
        if self.membership is None:
            return n
        live = self.membership.live
        return math.ceil(n / live) if live else 0

    def held(self) -> list[str]:
        return [name for name, e in self.electors.items() if e.is_leader]

    def _may_acquire(self) -> bool:
        return len(self.held()) < self.share

    async def run(self, work: Callable[[str], Coroutine[Any, Any, None]], *, release: bool = True) -> None:
        """Campaign for every shard (running `work(shard)` while holding it) and rebalance, until `stop()`."""

        def bound(shard: str) -> Callable[[], Coroutine[Any, Any, None]]:
            return lambda: work(shard)

        tasks = [
            asyncio.create_task(e.run(bound(shard), release=release), name=f'vmwatch-shard-lease-{shard}')
            for shard, e in self.electors.items()
        ]
        try:
            if self.membership is not None:
                await self._balance()
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                if not task.done():
                    task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.membership is not None and release:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.to_thread(self.membership.leave), 10)

    def stop(self) -> None:
        self._stop.set()
        for e in self.electors.values():
            e.stop()

    async def _balance(self) -> None:
        assert self.membership is not None
        period = self.settings.retry_period_s
        timeout_s = max(0.5, self.settings.renew_deadline_s / 2)
        while not self._stop.is_set():
            try:
                live = await asyncio.wait_for(asyncio.to_thread(self.membership.tick, timeout_s), timeout_s + 1)
                if self.on_replicas is not None:
                    self.on_replicas(live)
                self._rebalance()
            except Exception as e:  # the API is down: keep what we hold (the electors judge their own Leases)
                log.info('membership lease %s: tick failed: %s', self.membership.name, brief(e))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=period)

    def _rebalance(self) -> None:
        held = self.held()
        if len(held) <= self.share or any(e.stepping_down for e in self.electors.values()):
            return
        shard = sorted(held)[-1]
        log.info('holding %d shards, over the share of %d (%d replicas): handing over %s', len(held), self.share,
                 self.membership.live if self.membership else 1, shard)  # fmt: skip
        self.electors[shard].step_down()
