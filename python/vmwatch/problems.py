# SPDX-License-Identifier: Apache-2.0
"""What a response carried that the watcher could not use: bad object updates and missingSet entries.

A bad object update (spec 7.2 #3) is one the core could not decode: it was skipped, the rest of the
response was kept, and its VM was forgotten by the fingerprint cache so that its next good update
signals. Each is logged at warning (offset, type, a bounded message) and counted (`bad_updates`).

A missingSet entry is a property (or a whole object: empty path) vCenter could not report, with the
fault why (e.g. NoPermission). Each (VM, path, fault) is logged once at info, so an operator can see which
VMs vCenter cannot report, and counted per fault (`missing_<fault>`). "Once" is bounded: the last
`remember` triples are remembered (an LRU), so memory stays flat whatever vCenter sends.

The counts go into the watcher's `stats`; `ShardMetrics.observe_problems` turns them into
`vmwatch_bad_object_updates_total` and `vmwatch_missing_properties_total{fault=...}`.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import Counter, OrderedDict
from collections.abc import Hashable, Iterable

__all__ = ['PROBLEMS', 'UpdateProblems']

log = logging.getLogger('vmwatch.watcher')

_MAX_TEXT = 200  # bytes of vCenter's text (MoRef, path, message) a log line or the memory keeps
_FAULT_CHARS = re.compile(r'[^A-Za-z0-9_.]')


def _cut(s: str, n: int = _MAX_TEXT) -> str:
    return s if len(s) <= n else f'{s[:n]}... ({len(s)} chars)'


class UpdateProblems:
    """Logs and counts the bad updates and missingSet entries of each batch (one instance per process).

    `remember`: how many (scope, VM, path, fault) entries are remembered to log each only once (~0.5 KB
    each at most). `max_faults`: distinct fault labels counted; later ones count as 'other', so a
    server cannot grow the metric's label set without bound.
    """

    def __init__(self, *, remember: int = 10_000, max_faults: int = 32) -> None:
        self._remember = max(1, remember)
        self._max_faults = max(1, max_faults)
        self._seen: OrderedDict[tuple[Hashable, str, str, str], None] = OrderedDict()
        self._faults: set[str] = set()
        self._lock = threading.Lock()  # watchers of several vCenters share the instance

    def fault_label(self, fault: str) -> str:
        """`fault` as a metric label: identifier characters only, at most 64, at most `max_faults` distinct."""
        label = _FAULT_CHARS.sub('_', fault)[:64] or 'unknown'
        with self._lock:
            if label in self._faults:
                return label
            if len(self._faults) >= self._max_faults:
                return 'other'
            self._faults.add(label)
            return label

    def _first_time(self, key: tuple[Hashable, str, str, str]) -> bool:
        with self._lock:
            if key in self._seen:
                self._seen.move_to_end(key)
                return False
            self._seen[key] = None
            if len(self._seen) > self._remember:
                self._seen.popitem(last=False)
            return True

    def report(
        self,
        *,
        bad: Iterable[tuple[str | None, int, str, str]],
        missing: Iterable[tuple[str, str, str]],
        stats: Counter[str],
        scope: Hashable = None,
    ) -> None:
        """Log and count one batch's `bad` updates and `missing` entries into `stats`. `scope` tells
        vCenters apart (MoRefs repeat across them)."""
        for moref, offset, error_type, message in bad:
            stats['bad_updates'] += 1
            log.warning(
                'skipped an undecodable object update of %s at byte offset %d (%s): %s',
                _cut(moref) if moref is not None else 'an unknown object',
                offset,
                _cut(error_type, 64),
                _cut(message),
            )
        for moref, path, fault in missing:
            stats[f'missing_{self.fault_label(fault)}'] += 1
            key = (scope, _cut(moref), _cut(path), _cut(fault, 64))
            if self._first_time(key):
                what = f'property {key[2]}' if path else 'the object'
                log.info('vCenter cannot report %s of %s: %s', what, key[1], key[3] or 'no fault given')
            else:
                log.debug('missing %s %s: %s', key[1], key[2], key[3])

    def __len__(self) -> int:
        """Entries remembered (tests)."""
        return len(self._seen)


PROBLEMS = UpdateProblems()
"""The process-wide instance the watchers report to."""
