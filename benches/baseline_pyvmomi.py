# SPDX-License-Identifier: Apache-2.0
"""The baseline of issue 6: a plain pyVmomi watcher, written the way a Python user would today.

WaitForUpdatesEx goes through pyVmomi's own stub and deserializer; every changed property is
fingerprinted in Python (a hash of the value's repr; array values sorted; extraConfig without the
ignored keys, sorted by key); a dict remembers the last fingerprints per VM; real changes are looked
up in a dict index (uniqueID -> namespace/name) and enqueued as (namespace, name). Same paths, same
ignore list and the same decision rules as vmwatch (spec section 3): skip unchanged objects, skip
VMs being deleted, skip verified VMs entering scope, signal the rest once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pyVmomi import vmodl

NAME_KEY = 'vmservice.namespacedName'
EXTRA_CONFIG = 'config.extraConfig'


def fingerprint(path: str, value: Any, ignored: frozenset[str]) -> bytes:
    """16-byte digest of one property value (what a Python user would hash)."""
    if value is None:
        text = 'None'
    elif path == EXTRA_CONFIG:
        text = repr(sorted((str(o.key), repr(o.value)) for o in value if o.key not in ignored))
    elif isinstance(value, list):
        text = repr(sorted(repr(v) for v in value))
    else:
        text = repr(value)
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def name_from_extra_config(value: Any, name_key: str = NAME_KEY) -> tuple[str, str] | None:
    for o in value or ():
        if o.key == name_key:
            parts = str(o.value).split('/')
            if len(parts) == 2 and all(parts):
                return parts[0], parts[1]
    return None


class BaselineDecider:
    """Python dedupe + decision over a deserialized pyVmomi UpdateSet.

    `index` maps uniqueID (the MoRef value) to (namespace, name, deleting); `by_name` maps (namespace,
    name) to (uniqueID, deleting) for VMs whose uniqueID is not set yet.
    """

    def __init__(
        self,
        *,
        watched_paths: Sequence[str],
        ignored_keys: Iterable[str],
        index: dict[str, tuple[str, str, bool]] | None = None,
        by_name: dict[tuple[str, str], tuple[str, bool]] | None = None,
        name_key: str = NAME_KEY,
    ) -> None:
        self.watched = frozenset(watched_paths)
        self.ignored = frozenset(ignored_keys)
        self.index = index if index is not None else {}
        self.by_name = by_name if by_name is not None else {}
        self.name_key = name_key
        self.cache: dict[str, dict[str, bytes]] = {}  # moref -> path -> digest
        self.names: dict[str, tuple[str, str]] = {}  # moref -> namespace/name seen in extraConfig

    def decide(self, update_set: Any, enqueue: Callable[[tuple[str, str]], Any]) -> tuple[int, int]:
        """Process one UpdateSet; returns (object updates, signals)."""
        objects = signals = 0
        for fs in update_set.filterSet if update_set is not None else ():
            for ou in fs.objectSet:
                objects += 1
                if self._object(ou, enqueue):
                    signals += 1
        return objects, signals

    def _object(self, ou: Any, enqueue: Callable[[tuple[str, str]], Any]) -> bool:
        moref = str(ou.obj._moId)
        kind = ou.kind
        if kind == 'leave':
            self.cache.pop(moref, None)
            self.names.pop(moref, None)
            return False
        known = self.cache.setdefault(moref, {})
        changed = False
        for change in ou.changeSet:
            path = change.name
            if path not in self.watched:
                continue
            value = None if change.op in ('remove', 'indirectRemove') else change.val
            digest = fingerprint(path, value, self.ignored)
            if known.get(path) != digest:
                known[path] = digest
                changed = True
            if path == EXTRA_CONFIG:
                nn = name_from_extra_config(value, self.name_key)
                if nn is not None:
                    self.names[moref] = nn
        if not changed:
            return False
        hit = self.index.get(moref)
        verified = hit is not None
        if hit is not None:
            ns, name, deleting = hit
        else:
            nn = self.names.get(moref)
            if nn is None:
                return False  # unmanaged (a real watcher would fetch the name here)
            ns, name = nn
            deleting = self.by_name.get(nn, ('', False))[1]
        if deleting:
            self.cache.pop(moref, None)
            return False
        if kind == 'enter' and verified:
            return False
        enqueue((ns, name))
        return True


def wait_options(*, max_wait_s: int, max_object_updates: int) -> Any:
    return vmodl.query.PropertyCollector.WaitOptions(maxWaitSeconds=max_wait_s, maxObjectUpdates=max_object_updates)


def property_collector(collector_id: str, stub: Any) -> Any:
    """The PropertyCollector managed object over a pyVmomi stub (its WaitForUpdatesEx deserializes)."""
    return vmodl.query.PropertyCollector(collector_id, stub)
