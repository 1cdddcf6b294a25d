# SPDX-License-Identifier: Apache-2.0
"""A pure-Python reference of the batch decision, built on pyVmomi's own deserializer.

It decodes a body with `pyVmomi.SoapAdapter.SoapResponseDeserializer` (the code path pyVmomi
uses for every response), canonicalises the resulting objects (extraConfig filtered and sorted
by key, devices sorted by key, removals as a null value), and runs spec section 3 steps A-F with
the 7.2 fixes exactly as documented in rust/batch.rs. The hypothesis tests require the Rust
core to agree with it on every generated batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pyVmomi import SoapAdapter, VmomiSupport, vmodl

KIND_ENTER, KIND_MODIFY, KIND_LEAVE = 0, 1, 2
KINDS = {'enter': KIND_ENTER, 'modify': KIND_MODIFY, 'leave': KIND_LEAVE}
NULL = ('<null>',)
EXTRA_CONFIG = 'config.extraConfig'
DEVICES = 'config.hardware.device'


def deserialize(body: bytes) -> Any:
    """The UpdateSet (or None for a heartbeat) as pyVmomi sees it; a fault is raised."""
    result = SoapAdapter.SoapResponseDeserializer(None).Deserialize(body, vmodl.query.PropertyCollector.UpdateSet)
    if isinstance(result, vmodl.MethodFault):
        raise result
    return result


def canon(v: Any) -> Any:
    """A hashable canonical form of a pyVmomi value (type names included, order preserved)."""
    if v is None:
        return NULL
    if isinstance(v, VmomiSupport.ManagedObject):
        return ('mo', v._wsdlName, v._moId)
    if isinstance(v, VmomiSupport.DataObject):
        props = []
        for p in v._GetPropertyList():
            if p.name in ('dynamicType', 'dynamicProperty'):
                continue
            x = getattr(v, p.name)
            if x is None or (isinstance(x, list) and not x):
                continue
            props.append((p.name, canon(x)))
        return ('do', v._wsdlName, tuple(props))
    if isinstance(v, list):
        return ('list', tuple(canon(x) for x in v))
    if isinstance(v, bool):
        return ('boolean', str(v).lower())
    return (type(v).__name__, str(v))


def parse_namespaced_name(value: str) -> tuple[str, str] | None:
    parts = value.split('/')
    if len(parts) != 2 or not parts[0] or not parts[1]:
        return None
    return parts[0], parts[1]


@dataclass
class RChange:
    path: str
    fp: Any
    name: tuple[tuple[str, str] | None] | None  # (name,) when the change carries extraConfig


def reduce_change(change: Any, ignored: frozenset[str], name_key: str) -> RChange:
    path, op, val = change.name, change.op, change.val
    null = op in ('remove', 'indirectRemove') or val is None
    if path == EXTRA_CONFIG:
        if null:
            return RChange(path, NULL, (None,))
        name = None
        for ov in val:
            if ov.key == name_key and isinstance(ov.value, str) and name is None:
                name = parse_namespaced_name(ov.value)
        kept = sorted((ov.key, canon(ov.value)) for ov in val if ov.key not in ignored)
        return RChange(path, ('extraConfig', tuple(kept)), (name,))
    if path == DEVICES:
        if null:
            return RChange(path, NULL, None)
        devs = sorted((d.key, canon(d)) for d in val)
        return RChange(path, ('devices', tuple(devs)), None)
    return RChange(path, NULL if null else canon(val), None)


def coalesce(updates: list[Any]) -> tuple[int, bool, int]:
    """Step A for one MoRef: (kind, evict first, index of the first update after the last leave)."""
    kind = None
    evict = False
    first = 0
    for i, u in enumerate(updates):
        k = KINDS[u.kind]
        if k == KIND_LEAVE:
            kind, evict, first = KIND_LEAVE, True, i + 1
        elif kind is None or kind == KIND_LEAVE:
            kind = k
    assert kind is not None
    return kind, evict, first


@dataclass
class Entry:
    fps: dict[str, Any] = field(default_factory=dict)
    name: str | None = None
    negative: bool = False


@dataclass
class RefIndex:
    vms: dict[tuple[str, str], tuple[str, bool, int]] = field(default_factory=dict)

    def by_unique_id(self, uid: str) -> tuple[str, str] | None:
        hits = [k for k, v in self.vms.items() if v[0] == uid and uid]
        return hits[0] if len(hits) == 1 else None


@dataclass
class Reference:
    ignored: frozenset[str]
    name_key: str = 'vmservice.namespacedName'
    signal_on_leave: bool = False
    cache: dict[str, Entry] = field(default_factory=dict)

    def lookup(self, ix: RefIndex, moref: str, name: tuple[str, str] | None) -> tuple[Any, bool, bool, bool, int]:
        """(name, found, verified, deleting, priority)."""
        if name is not None and name in ix.vms:
            uid, deleting, prio = ix.vms[name]
            return name, True, uid == moref, deleting, prio
        hit = ix.by_unique_id(moref)
        if hit is not None:
            _, deleting, prio = ix.vms[hit]
            return hit, True, True, deleting, prio
        return name, False, False, False, 0

    def decide(self, body: bytes, ix: RefIndex) -> dict[str, Any]:
        us = deserialize(body)
        out: dict[str, Any] = {
            'version': None,
            'signals': [],
            'pending': [],
            'skipped': dict.fromkeys(('unchanged', 'deleting', 'verified_enter', 'unmanaged', 'left', 'delivered'), 0),
        }
        if us is None:
            return out
        out['version'] = us.version
        groups: dict[str, list[Any]] = {}
        for fs in us.filterSet:
            for ou in fs.objectSet:
                groups.setdefault(ou.obj._moId, []).append(ou)
        for moref, updates in groups.items():
            self._object(moref, updates, ix, out)
        return out

    def _object(self, moref: str, updates: list[Any], ix: RefIndex, out: dict[str, Any]) -> None:
        kind, evict, first = coalesce(updates)
        if evict:
            old = self.cache.pop(moref, None)
            if kind == KIND_LEAVE:
                self._leave(moref, old, ix, out)
                return
        props, name_in_update = self._props(updates[first:])
        entry = self.cache.get(moref)
        new = entry is None
        if entry is None:
            entry = self.cache[moref] = Entry()
            changed = set(props)
        else:
            changed = {p for p, fp in props.items() if entry.fps.get(p, ()) != fp}
        entry.fps.update(props)
        if any(p == EXTRA_CONFIG for p in changed) or (name_in_update is not None and name_in_update[0] is not None):
            entry.negative = False
        name_gained = False  # a VM without a name that gains one is a change, though the key is ignored
        if name_in_update is not None:
            name = name_in_update[0]
            new_name = f'{name[0]}/{name[1]}' if name else None
            name_gained = new_name is not None and not new and entry.name is None
            entry.name = new_name
        else:
            name = parse_namespaced_name(entry.name) if entry.name else None
        if not new and not changed and not name_gained:
            out['skipped']['unchanged'] += 1
            return
        if name_gained:
            changed.add(EXTRA_CONFIG)
        changed_t = tuple(sorted(changed))
        lname, found, verified, deleting, prio = self.lookup(ix, moref, name)
        if found and lname != name:
            entry.name = f'{lname[0]}/{lname[1]}'
        if deleting:
            self.cache.pop(moref, None)
            out['skipped']['deleting'] += 1
            return
        if kind == KIND_ENTER and verified and new:
            out['skipped']['verified_enter'] += 1
            return
        if lname is None:
            if entry.negative:
                out['skipped']['unmanaged'] += 1
            else:
                out['pending'].append((moref, kind, changed_t))
            return
        reason = 'entered' if kind == KIND_ENTER else 'changed'
        out['signals'].append((moref, kind, lname[0], lname[1], verified, prio, changed_t, reason))

    def _props(self, updates: list[Any]) -> tuple[dict[str, Any], tuple[tuple[str, str] | None] | None]:
        props: dict[str, Any] = {}
        name_in_update: tuple[tuple[str, str] | None] | None = None
        for u in updates:
            for c in u.changeSet:
                rc = reduce_change(c, self.ignored, self.name_key)
                if rc.name is not None:
                    name_in_update = rc.name
                props[rc.path] = rc.fp
        return props, name_in_update

    def _leave(self, moref: str, old: Entry | None, ix: RefIndex, out: dict[str, Any]) -> None:
        remembered = parse_namespaced_name(old.name) if old and old.name else None
        if self.signal_on_leave:
            name, found, verified, deleting, prio = self.lookup(ix, moref, remembered)
            if found and not deleting:
                out['signals'].append((moref, KIND_LEAVE, name[0], name[1], verified, prio, (), 'left'))
                return
        out['skipped']['left'] += 1

    def resolve(self, ix: RefIndex, moref: str, kind: int, changed: tuple[str, ...], ns: str, name: str) -> Any:
        entry = self.cache.setdefault(moref, Entry())
        if not ns or not name or '/' in ns or '/' in name:
            entry.negative = True
            return None
        entry.negative = False
        lname, _found, verified, deleting, prio = self.lookup(ix, moref, (ns, name))
        entry.name = f'{lname[0]}/{lname[1]}'
        if deleting:
            self.cache.pop(moref, None)
            return None
        if kind == KIND_ENTER and verified:
            return None
        reason = {KIND_ENTER: 'entered', KIND_LEAVE: 'left'}.get(kind, 'changed')
        return (moref, kind, lname[0], lname[1], verified, prio, changed, reason)
