# SPDX-License-Identifier: Apache-2.0
"""Settings by concern, with their defaults and the reason for each default.

Defaults follow VMware vm-operator's async-signal feature (spec.md section 2) so vmwatch can run
against a cluster where that operator's CRDs are installed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    'DEFAULT_IGNORED_EXTRA_CONFIG_KEYS',
    'DEFAULT_WATCHED_PATHS',
    'FINALIZER',
    'LEGACY_FINALIZER',
    'NAMESPACED_NAME_KEY',
    'FilterSettings',
    'SettingsError',
    'WatchSettings',
    'async_signal_disabled',
    'parse_bool',
]


class SettingsError(ValueError):
    """A setting (flag or environment variable) has a value vmwatch cannot use."""


# The VirtualMachine property paths whose changes signal a reconcile (spec 2.1). Paths left out on
# purpose: guest.ipStack and guest.net churn constantly on Kubernetes node VMs (pods add bridges and
# routes; summary.guest still signals when the primary IP appears); indexed paths such as
# guest.ipStack[0].ipRoute[0] cannot be filtered by vCenter; summary.storage.timestamp changes even
# when storage did not.
DEFAULT_WATCHED_PATHS: tuple[str, ...] = (
    'config.annotation',  # reconcile on annotation changes (vpxd sets it on import)
    'config.changeTrackingEnabled',  # a CBT-only reconfigure needs a follow-up reconcile
    'config.cpuAllocation',  # compute config is reconciled from spec: drift must reconcile
    'config.cpuHotAddEnabled',  # compute config drift
    'config.extraConfig',  # bootstrap data, names, device slots (filtered by the ignore set)
    'config.flags.vvtdEnabled',  # compute config drift
    'config.hardware.autoCoresPerSocket',  # compute config drift
    'config.hardware.device',  # device and encryption changes
    'config.hardware.memoryMB',  # compute config drift
    'config.hardware.numCoresPerSocket',  # compute config drift
    'config.hardware.numCPU',  # compute config drift
    'config.hardware.simultaneousThreads',  # compute config drift
    'config.keyId',  # VM encryption state
    'config.latencySensitivity',  # compute config drift
    'config.memoryAllocation',  # compute config drift
    'config.memoryHotAddEnabled',  # compute config drift
    'config.memoryReservationLockedToMax',  # compute config drift
    'config.nestedHVEnabled',  # compute config drift
    'config.numaInfo',  # compute config drift
    'config.vPMCEnabled',  # compute config drift
    'guestHeartbeatStatus',  # heartbeat readiness is evaluated in reconciles
    'rootSnapshot',  # refresh the snapshot tree after snapshot/revert
    'snapshot',  # refresh the snapshot tree after snapshot/revert
    'summary.config.name',  # the VM was renamed
    'summary.guest',  # tools status and the primary IP appearing
    'summary.overallStatus',  # health (noisy with alarm flaps, kept for compatibility)
    'summary.runtime.connectionState',  # resume a VM that reconnects instead of polling
    'summary.runtime.host',  # placement (DRS vMotions)
    'summary.runtime.powerState',  # power state changed
    'resourcePool',  # the VM moved to another resource pool
    'parent',  # the VM moved to another folder
)

# The extraConfig key that carries "<namespace>/<name>" of the VirtualMachine (spec 2.3). It is in the
# ignore set for change detection but still read for name resolution.
NAMESPACED_NAME_KEY = 'vmservice.namespacedName'

# extraConfig keys whose changes are noise (spec 2.2), exact and case-sensitive. Every key here must be
# proven noise: ignoring bootstrap data (guestinfo.metadata, userdata, vendordata), nvram, viv.moid,
# pciSlotNumber keys, disk.enableUUID or vmware.tools.gosc.ignoretoolscheck once broke production.
_BACKUP_KEYS = (
    # written by vm-operator's backup on every reconcile; a reconcile must not trigger another one
    'vmservice.virtualmachine.additional.resources.yaml',
    'vmservice.virtualmachine.backupVersion',
    'vmservice.virtualmachine.classicDiskData',
    'vmservice.virtualmachine.disableAutomaticRegistration',
    'vmservice.virtualmachine.enableAutomaticRegistration',
    'vmservice.virtualmachine.pvc.disk.data',
    'vmservice.virtualmachine.resource.yaml',
)
_SCSI_REDO_KEYS = tuple(f'scsi0:{n}.redo' for n in (0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11))  # snapshot redo logs
DEFAULT_IGNORED_EXTRA_CONFIG_KEYS: tuple[str, ...] = (
    *_BACKUP_KEYS,
    'govcsim',  # set by the vCenter simulator on every VM
    NAMESPACED_NAME_KEY,  # written by the operator itself; read for the name, not a change
    'hpet0.present',  # set by vpxd at power-on
    'vmprov.keepDisks',  # provisioning bookkeeping
    'guestinfo.vmservice.defer-cloud-init',  # written by the operator during bootstrap
    'numa.autosize.cookie',  # ESXi NUMA autosizing bookkeeping at power-on
    'numa.autosize.vcpu.maxPerVirtualNode',  # ditto
    'sched.swap.derivedName',  # swap file path, changes on every power-on / vMotion
    *_SCSI_REDO_KEYS[:1],
    'scsi0.sasWWID',  # generated by ESXi
    *_SCSI_REDO_KEYS[1:],
    'vmotion.checkpointFBSize',  # vMotion bookkeeping
    'vmotion.checkpointSVGAPrimarySize',  # vMotion bookkeeping
    'vmotion.svga.mobMaxSize',  # vMotion bookkeeping
    'vmotion.svga.graphicsMemoryKB',  # vMotion bookkeeping
    'monitor.phys_bits_used',  # set by the VMM at power-on
    'softPowerOff',  # set by ESXi on guest shutdown
    'tools.capability.verifiedSamlToken',  # reported by VMware Tools
    'guestInfo.detailed.data',  # guest OS details reported by Tools (capital I is real)
    'vmware.tools.internalversion',  # reported by VMware Tools
    'vmware.tools.requiredversion',  # reported by VMware Tools
    'migrate.hostLogState',  # vMotion bookkeeping
    'migrate.migrationId',  # vMotion bookkeeping
    'migrate.hostLog',  # vMotion bookkeeping
    'guestinfo.appInfo',  # application inventory reported by Tools, churns
    'guestinfo.vmtools.buildNumber',  # reported by VMware Tools
    'guestinfo.vmtools.description',  # reported by VMware Tools
    'guestinfo.vmtools.versionNumber',  # reported by VMware Tools
    'guestinfo.vmtools.versionString',  # reported by VMware Tools
    'guestinfo.vmware.components.available',  # reported by VMware Tools
)

FINALIZER = 'vmoperator.vmware.com/zone-finalizer'
LEGACY_FINALIZER = 'vmoperator.vmware.com/finalizer'  # renamed upstream; stripped when found

_TRUE = frozenset({'1', 't', 'true', 'y', 'yes', 'on'})
_FALSE = frozenset({'0', 'f', 'false', 'n', 'no', 'off'})


def parse_bool(name: str, value: str) -> bool:
    """Parse a boolean setting; anything unrecognised is an error naming the setting."""
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise SettingsError(f'{name}={value!r} is not a boolean (use true/false, 1/0, yes/no, on/off)')


def async_signal_disabled(environ: Mapping[str, str] | None = None) -> bool:
    """The feature switch: ASYNC_SIGNAL_DISABLED truthy, or ASYNC_SIGNAL_ENABLED false (disabled wins)."""
    env = os.environ if environ is None else environ
    disabled = env.get('ASYNC_SIGNAL_DISABLED', '')
    enabled = env.get('ASYNC_SIGNAL_ENABLED', '')
    off = bool(disabled) and parse_bool('ASYNC_SIGNAL_DISABLED', disabled)
    if enabled:
        off = off or not parse_bool('ASYNC_SIGNAL_ENABLED', enabled)
    return off


@dataclass(frozen=True, kw_only=True)
class WatchSettings:
    """How the watcher talks to vCenter."""

    max_wait_s: int = 300
    """WaitForUpdatesEx MaxWaitSeconds. 300 s as vm-operator: long polls cost nothing on the server."""
    max_object_updates: int = 100
    """WaitForUpdatesEx MaxObjectUpdates per page. 100 is vCenter's and vcsim's cap."""
    http_timeout_margin_s: float = 30.0
    """The HTTP read timeout is max_wait_s plus this, so the server always answers first."""
    name_fetch_batch: int = 500
    """Most VMs in one RetrieveProperties name fetch (step G)."""


@dataclass(frozen=True, kw_only=True)
class FilterSettings:
    """What counts as a change."""

    watched_paths: tuple[str, ...] = DEFAULT_WATCHED_PATHS
    """VirtualMachine property paths watched (spec 2.1)."""
    ignored_extra_config_keys: tuple[str, ...] = DEFAULT_IGNORED_EXTRA_CONFIG_KEYS
    """extraConfig keys whose changes are noise (spec 2.2)."""
    additional_ignored_keys: tuple[str, ...] = field(default_factory=tuple)
    """Appended to ignored_extra_config_keys (duplicates are harmless)."""
    name_key: str = NAMESPACED_NAME_KEY
    """extraConfig key holding "<namespace>/<name>"."""
    cache_max_entries: int = 25000
    """Fingerprint cache size in VMs (LRU). 25,000 as vm-operator; ~300 B each."""
    cache_ttl_s: float = 86400.0
    """Fingerprint cache entry lifetime: 24 h as vm-operator's code."""
    signal_on_leave: bool = False
    """Signal VMs with a known Kubernetes object when they leave scope (destroyed or moved out)."""

    def all_ignored_keys(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self.ignored_extra_config_keys, *self.additional_ignored_keys)))
