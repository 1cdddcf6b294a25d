# SPDX-License-Identifier: Apache-2.0
"""Which vCenter a Zone and a VirtualMachine belong to (issue 12; design.md "Shards").

* A Zone: its label `vmwatch.dev/vcenter`, else the only configured vCenter. With several vCenters an
  unlabelled Zone, or one naming a vCenter that is not configured, belongs to none (reported, not watched).
* A VirtualMachine: its own label `vmwatch.dev/vcenter`, else the vCenter of the Zone its
  `topology.kubernetes.io/zone` label names in its namespace, else the only configured vCenter; else none
  (`None`: unassigned). A VM labelled with a vCenter that is not configured is unassigned too.

The router follows the Zone cache (`zone_changed`): when the Zone -> vCenter map changes, VirtualMachines
may belong elsewhere, so `on_map_change` is called (the VirtualMachine index relists and routes again).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from vmwatch.queue import Key
from vmwatch.vcenters import VCENTER_LABEL

__all__ = ['ZONE_LABEL', 'VCenterRouter']

ZONE_LABEL = 'topology.kubernetes.io/zone'
"""The VirtualMachine label naming its Zone (in the VM's namespace)."""


def _label(obj: Any, key: str) -> str | None:
    md = obj.get('metadata') if isinstance(obj, dict) else None
    labels = md.get('labels') if isinstance(md, dict) else None
    value = labels.get(key) if isinstance(labels, dict) else None
    return value if isinstance(value, str) and value else None


class VCenterRouter:
    """The vCenter of each Zone and VirtualMachine, for a fixed set of configured vCenter names."""

    def __init__(self, vcenters: Sequence[str], *, on_map_change: Callable[[], None] | None = None) -> None:
        if not vcenters:
            raise ValueError('at least one vCenter')
        self.names: tuple[str, ...] = tuple(vcenters)
        self.only: str | None = self.names[0] if len(self.names) == 1 else None
        self.on_map_change = on_map_change
        self._zones: dict[Key, str] = {}  # Zone (namespace, name) -> its configured vCenter
        self._lock = threading.Lock()

    def known(self, name: str | None) -> bool:
        return name is not None and name in self.names

    def zone_vcenter(self, zone: dict[str, Any]) -> str | None:
        """The vCenter the Zone names (configured or not: see `known`), or None when it names none and
        several are configured."""
        return _label(zone, VCENTER_LABEL) or self.only

    def vm_vcenter(self, vm: Any) -> str | None:
        """The configured vCenter the VirtualMachine belongs to, or None (unassigned)."""
        if self.only is not None:
            own = _label(vm, VCENTER_LABEL)
            return self.only if own is None or own == self.only else None
        own = _label(vm, VCENTER_LABEL)
        if own is not None:
            return own if own in self.names else None
        zone = _label(vm, ZONE_LABEL)
        if zone is None:
            return None
        md = vm.get('metadata') or {}
        with self._lock:
            return self._zones.get((str(md.get('namespace', '')), zone))

    def zone_changed(self, key: Key, zone: dict[str, Any] | None) -> None:
        """The Zone cache's view of `key` changed (`None`: gone). Calls `on_map_change` when the Zone's
        configured vCenter changed and VirtualMachines may be routed by it (several vCenters)."""
        vcenter = self.zone_vcenter(zone) if zone is not None else None
        vcenter = vcenter if self.known(vcenter) else None
        with self._lock:
            before = self._zones.get(key)
            if vcenter is None:
                self._zones.pop(key, None)
            else:
                self._zones[key] = vcenter
        if before != vcenter and self.only is None and self.on_map_change is not None:
            self.on_map_change()
