# SPDX-License-Identifier: Apache-2.0
"""The delivery checkpoint in ConfigMaps next to the Lease (issue 11, A1; design.md "checkpoints").

The Lease holder writes, every `checkpoint_interval_s` and on a clean shutdown, the Decider's delivery
records (16 bytes per VM: see rust/durable.rs) so that a new holder (after kill -9, a failover or a
rolling upgrade) knows what was delivered: a VM whose state differs from its record changed while no
vmwatch watched it and is signalled, verified or not.

Layout: ConfigMaps `<lease>-checkpoint-<slot>-<part>` in the Lease's namespace, labelled
`vmwatch.dev/checkpoint=<lease>`, the records in `binaryData.records`, at most PART_BYTES (~675 KiB, so
~900 KiB once base64-encoded) per part. Generation g goes to slot g % 2: writing g never touches the parts
of g - 1, so a writer killed half-way leaves the previous generation whole. Each part carries the
generation, its index, the number of parts and the SHA-256 of the whole checkpoint; the reader takes the
newest generation whose parts are all there and whose bytes match the hash. Every write uses the field
manager `vmwatch`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Final

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from prometheus_client import CollectorRegistry

from vmwatch._vmwatch import Decider
from vmwatch.metrics import CheckpointFamilies, CheckpointMetrics
from vmwatch.settings import FIELD_MANAGER

__all__ = ['CheckpointError', 'CheckpointStore', 'Checkpointer']

log = logging.getLogger(__name__)

RECORD_BYTES: Final = 16
PART_BYTES: Final = 43_200 * RECORD_BYTES  # 691,200 bytes: 921,600 in base64 (900 KiB), under the 1 MiB object cap
FORMAT: Final = 'vmwatch.dev/delivery-records-v1'
LABEL: Final = 'vmwatch.dev/checkpoint'
_ANN = 'vmwatch.dev/checkpoint-'


class CheckpointError(RuntimeError):
    """The checkpoint could not be read or written (the API refused or did not answer)."""


@dataclass(frozen=True)
class _Part:
    name: str
    generation: int
    index: int
    parts: int
    sha256: str
    data: bytes


def _part(cm: Any) -> _Part | None:
    """A part from a listed ConfigMap, or None when it is not one of ours in a form we read."""
    meta = cm.metadata
    ann = meta.annotations or {}
    try:
        if ann.get(f'{_ANN}format') != FORMAT:
            return None
        data = base64.b64decode((cm.binary_data or {}).get('records', ''), validate=True)
        return _Part(
            name=meta.name,
            generation=int(ann[f'{_ANN}generation']),
            index=int(ann[f'{_ANN}part']),
            parts=int(ann[f'{_ANN}parts']),
            sha256=ann[f'{_ANN}sha256'],
            data=data,
        )
    except (KeyError, ValueError, TypeError):
        return None


class CheckpointStore:
    """Reads and writes one Lease's checkpoint ConfigMaps (blocking: call it from a thread)."""

    def __init__(
        self,
        api: Any,
        *,
        namespace: str,
        lease_name: str,
        request_timeout_s: float = 10.0,
        part_bytes: int = PART_BYTES,
    ) -> None:
        if part_bytes <= 0 or part_bytes % RECORD_BYTES:
            raise ValueError(f'part_bytes must be a positive multiple of {RECORD_BYTES}')
        self.core = client.CoreV1Api(api)
        self.namespace = namespace
        self.lease_name = lease_name
        self.request_timeout_s = request_timeout_s
        self.part_bytes = part_bytes
        self.generation = 0  # the newest generation seen or written
        self._names: dict[int, set[str]] = defaultdict(set)  # slot -> part names present

    def _list(self) -> list[_Part]:
        try:
            items = self.core.list_namespaced_config_map(
                self.namespace, label_selector=f'{LABEL}={self.lease_name}', _request_timeout=self.request_timeout_s
            ).items
        except ApiException as e:
            where = f'the checkpoint ConfigMaps in {self.namespace}'
            raise CheckpointError(f'cannot list {where}: {e.status} {e.reason}') from None
        except Exception as e:  # urllib3 timeouts and connection errors
            raise CheckpointError(f'cannot list the checkpoint ConfigMaps: {type(e).__name__}') from None
        self._names.clear()
        parts = []
        for cm in items:
            p = _part(cm)
            if p is not None:
                parts.append(p)
                self._names[p.generation % 2].add(p.name)
        return parts

    def load(self) -> bytes | None:
        """The newest complete checkpoint, or None when there is none."""
        by_gen: dict[int, dict[int, _Part]] = defaultdict(dict)
        for p in self._list():
            by_gen[p.generation][p.index] = p
            self.generation = max(self.generation, p.generation)
        for gen in sorted(by_gen, reverse=True):
            parts = by_gen[gen]
            n = next(iter(parts.values())).parts
            if sorted(parts) != list(range(n)) or any(p.parts != n for p in parts.values()):
                log.warning('checkpoint generation %d has %d of %d parts: using an older one', gen, len(parts), n)
                continue
            blob = b''.join(parts[i].data for i in range(n))
            if hashlib.sha256(blob).hexdigest() != parts[0].sha256 or len(blob) % RECORD_BYTES:
                log.warning('checkpoint generation %d does not match its hash: using an older one', gen)
                continue
            return blob
        return None

    def save(self, blob: bytes) -> int:
        """Write `blob` as the next generation; returns it."""
        if not self._names:
            self._list()  # learn the newest generation and the parts present before the first write
        gen = self.generation + 1
        slot = gen % 2
        sha = hashlib.sha256(blob).hexdigest()
        chunks = [blob[i : i + self.part_bytes] for i in range(0, len(blob), self.part_bytes)] or [b'']
        written = set()
        for i, chunk in enumerate(chunks):
            name = f'{self.lease_name}-checkpoint-{slot}-{i}'
            body: Any = {
                'metadata': {
                    'name': name,
                    'labels': {LABEL: self.lease_name, 'app.kubernetes.io/managed-by': 'vmwatch'},
                    'annotations': {
                        f'{_ANN}format': FORMAT,
                        f'{_ANN}generation': str(gen),
                        f'{_ANN}part': str(i),
                        f'{_ANN}parts': str(len(chunks)),
                        f'{_ANN}sha256': sha,
                        f'{_ANN}records': str(len(blob) // RECORD_BYTES),
                    },
                },
                'binaryData': {'records': base64.b64encode(chunk).decode('ascii')},
            }
            self._put(name, body)
            written.add(name)
        for name in sorted(self._names[slot] - written):  # parts of an older, longer checkpoint in this slot
            self._call('delete', name, lambda n=name: self.core.delete_namespaced_config_map(
                n, self.namespace, _request_timeout=self.request_timeout_s), missing_ok=True)  # fmt: skip
        self._names[slot] = written
        self.generation = gen
        return gen

    def _put(self, name: str, body: Any) -> None:
        t = self.request_timeout_s
        try:
            self._call('replace', name, lambda: self.core.replace_namespaced_config_map(
                name, self.namespace, body, field_manager=FIELD_MANAGER, _request_timeout=t))  # fmt: skip
        except _NotFound:
            self._call('create', name, lambda: self.core.create_namespaced_config_map(
                self.namespace, body, field_manager=FIELD_MANAGER, _request_timeout=t))  # fmt: skip

    def _call(self, verb: str, name: str, fn: Any, *, missing_ok: bool = False) -> None:
        try:
            fn()
        except ApiException as e:
            if e.status == 404:
                if missing_ok:
                    return
                raise _NotFound() from None
            raise CheckpointError(f'cannot {verb} ConfigMap {self.namespace}/{name}: {e.status} {e.reason}') from None
        except Exception as e:
            raise CheckpointError(f'cannot {verb} ConfigMap {self.namespace}/{name}: {type(e).__name__}') from None


class _NotFound(Exception):
    pass


class Checkpointer:
    """Loads the checkpoint into the Decider before a holder's first wait; writes it every interval.

    `load()` is done once per leadership term (`reset()` starts a new term: another holder may have
    written since). `run()` writes every `interval_s` until cancelled; `save()` writes once (the clean
    shutdown's last write, while the Lease is still held). Failed writes are logged and counted; the next
    interval tries again (a stale checkpoint only costs duplicates after a takeover, never losses).
    """

    def __init__(
        self, store: CheckpointStore, decider: Decider, *, interval_s: float, metrics: CheckpointMetrics | None = None
    ) -> None:
        self.store = store
        self.decider = decider
        self.interval_s = interval_s
        self.loaded = False
        self.metrics = metrics or CheckpointMetrics(CheckpointFamilies(CollectorRegistry()), 'default')

    def reset(self) -> None:
        self.loaded = False

    async def load(self) -> None:
        """Merge the newest checkpoint into the Decider (once per term). Raises CheckpointError."""
        if self.loaded:
            return
        started = time.monotonic()
        blob = await asyncio.to_thread(self.store.load)
        n = 0 if blob is None else await asyncio.to_thread(self.decider.load_checkpoint, blob)
        self.loaded = True
        self.metrics.load_seconds.set(time.monotonic() - started)
        self.metrics.records.set(n)
        if blob is None:
            log.info('no checkpoint yet in %s: first sightings of verified VMs are skipped', self.store.namespace)
        else:
            log.info('checkpoint generation %d loaded: %d VMs', self.store.generation, n)

    async def save(self) -> None:
        """Write the Decider's records now (not before this term's load: that would drop the last holder's
        records of VMs not sighted yet). Raises CheckpointError."""
        if not self.loaded:
            return
        blob = await asyncio.to_thread(self.decider.checkpoint)
        try:
            gen = await asyncio.to_thread(self.store.save, blob)
        except CheckpointError:
            self.metrics.wrote('error')
            raise
        self.metrics.wrote('ok')
        self.metrics.records.set(len(blob) // RECORD_BYTES)
        self.metrics.last_write.set_to_current_time()
        log.debug('checkpoint generation %d written: %d VMs', gen, len(blob) // RECORD_BYTES)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.save()
            except CheckpointError as e:
                log.warning('checkpoint not written (retried in %.0f s): %s', self.interval_s, e)
