# SPDX-License-Identifier: Apache-2.0
"""Settings by concern, with their defaults and the reason for each default.

Defaults follow VMware vm-operator's async-signal feature (spec.md section 2) so vmwatch can run
against a cluster where that operator's CRDs are installed.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from vmwatch.vcenters import VCenter, VCenterConfigError, has_user_info, load_vcenters_file

__all__ = [
    'DEFAULT_IGNORED_EXTRA_CONFIG_KEYS',
    'DEFAULT_WATCHED_PATHS',
    'FINALIZER',
    'LEGACY_FINALIZER',
    'NAMESPACED_NAME_KEY',
    'FilterSettings',
    'ServiceSettings',
    'SettingsError',
    'WatchSettings',
    'add_service_arguments',
    'async_signal_disabled',
    'check_ca_file',
    'check_number',
    'deprecated_names',
    'env_name',
    'flag_name',
    'format_duration',
    'load_service_settings',
    'parse_bool',
    'parse_duration',
    'parse_whole_seconds',
    'parse_host_port',
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
FIELD_MANAGER = 'vmwatch'
"""The field manager of every write to the API server (Leases, Zone finalizers, annotations, checkpoints)."""

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
    max_response_bytes: int = 512 << 20
    """Largest WaitForUpdatesEx body read (bytes): 100 updates of even huge VMs are a few MB; a larger body is a
    ProtocolError (the wait restarts) rather than unbounded memory."""


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


def _opt(
    default: Any,
    help: str,
    *,
    unit: str = '',
    choices: Sequence[str] = (),
    flag: str = '',
    aliases: Sequence[str] = (),
    shown: str = '',
) -> Any:
    """A ServiceSettings field. `flag`: the public name when it differs from the field's (the flag is `--<flag>`,
    the variable `VMWATCH_<FLAG>`); `aliases`: former public names, still read (hidden from --help, logged as
    deprecated); `shown`: how --help and the docs show a default too long to print."""
    meta = {'help': help, 'unit': unit, 'choices': tuple(choices), 'flag': flag, 'aliases': tuple(aliases)}
    return field(default=default, metadata={**meta, 'shown': shown})


@dataclass(frozen=True, kw_only=True)
class ServiceSettings:
    """Every setting of `vmwatch run`. Each is a flag (--vc-url) and an environment variable (VMWATCH_VC_URL).

    Precedence: flag, then environment variable, then the default. Read once at start.
    """

    vc_url: str = _opt('', 'vCenter SDK URL, e.g. https://vcenter.example.com/sdk (required)')
    vc_user: str = _opt('', 'vCenter user name (or --vc-user-file)')
    vc_user_file: Path | None = _opt(None, 'file holding the vCenter user name; re-read on every login')
    vc_password_file: Path | None = _opt(None, 'file holding the vCenter password; re-read on every login (required)')
    vc_ca_file: Path | None = _opt(None, "PEM file of the CA that signed vCenter's certificate")
    vc_thumbprint: str = _opt('', "SHA-256 thumbprint of vCenter's certificate (AA:BB:...), instead of a CA file")
    vc_insecure: bool = _opt(False, 'skip TLS verification of vCenter (logged as a warning; never in production)')
    vcenters_file: Path | None = _opt(
        None,
        'YAML file listing several vCenters (name, url, user or userFile, passwordFile, caFile or thumbprint or '
        'insecure), instead of the --vc-* flags; each vCenter is a shard with its own Lease <lease-name>-<name>',
    )
    kubeconfig: Path | None = _opt(None, 'kubeconfig file; empty: $KUBECONFIG, else the in-cluster config')
    sink: str = _opt('stdout', 'where reconcile requests go', choices=('stdout', 'annotate', 'queue', 'cloudevents'))
    annotation: str = _opt('vmwatch.dev/async-signal', 'annotation the annotate sink patches on the VirtualMachine')
    workers: int = _opt(4, 'concurrent sink workers', unit='workers')
    metrics_bind_address: str = _opt(
        ':8080', "listen address of /metrics (host:port); 0 turns the metrics listener off; the probes' address "
        'serves both on one port'
    )  # fmt: skip
    health_probe_bind_address: str = _opt(
        ':8081', 'listen address of the /healthz and /readyz probes (host:port)', aliases=('health-addr',)
    )
    liveness_stall_s: float = _opt(
        30.0, '/healthz fails (500) when the event loop has not run for this long (a stuck process is restarted)',
        unit='s',
    )  # fmt: skip
    leader_elect: bool = _opt(True, 'only the holder of the Lease watches')
    lease_name: str = _opt('vmwatch', 'name of the coordination.k8s.io Lease')
    lease_namespace: str = _opt('', "namespace of the Lease; empty: the pod's namespace, else 'default'")
    # the Lease timings keep their unit in the Python name; their flags are controller-runtime's
    lease_duration_s: float = _opt(
        15.0, 'how long a Lease is valid without renewal', unit='s', flag='leader-elect-lease-duration',
        aliases=('lease-duration-s',),
    )  # fmt: skip
    renew_deadline_s: float = _opt(
        10.0, 'the leader gives up leading when it could not renew for this long', unit='s',
        flag='leader-elect-renew-deadline', aliases=('renew-deadline-s',),
    )  # fmt: skip
    retry_period_s: float = _opt(
        2.0, 'interval between Lease acquire/renew attempts', unit='s', flag='leader-elect-retry-period',
        aliases=('retry-period-s',),
    )  # fmt: skip
    max_wait_s: int = _opt(300, 'WaitForUpdatesEx MaxWaitSeconds', unit='s')
    max_object_updates: int = _opt(100, 'WaitForUpdatesEx MaxObjectUpdates per page', unit='objects')
    watched_paths: tuple[str, ...] = _opt(
        DEFAULT_WATCHED_PATHS, 'VirtualMachine property paths whose changes signal, replacing the defaults '
        '(comma-separated)', shown="vm-operator's 31 paths (docs/configuration.md)",
    )  # fmt: skip
    watched_paths_add: tuple[str, ...] = _opt((), 'property paths to watch on top of --watched-paths')
    watched_paths_remove: tuple[str, ...] = _opt((), 'property paths of --watched-paths not to watch')
    ignored_extra_config_keys: tuple[str, ...] = _opt(
        DEFAULT_IGNORED_EXTRA_CONFIG_KEYS, 'extraConfig keys whose changes are noise (exact), replacing the '
        'defaults (comma-separated)', shown="vm-operator's 46 keys (docs/configuration.md)",
    )  # fmt: skip
    ignored_extra_config_keys_add: tuple[str, ...] = _opt(
        (), 'extraConfig keys to ignore on top of --ignored-extra-config-keys', aliases=('additional-ignored-keys',)
    )
    ignored_extra_config_keys_remove: tuple[str, ...] = _opt(
        (), 'extraConfig keys of --ignored-extra-config-keys whose changes signal after all'
    )
    cache_max_entries: int = _opt(25000, 'fingerprint cache size', unit='VMs')
    cache_ttl_s: float = _opt(86400.0, 'fingerprint cache entry lifetime', unit='s')
    signal_on_leave: bool = _opt(False, 'signal VMs with a Kubernetes object when they leave scope')
    restart_initial_s: float = _opt(1.0, 'first delay before restarting a failed watcher', unit='s')
    restart_max_s: float = _opt(300.0, 'cap of the exponential restart delay (jittered)', unit='s')
    restart_reset_s: float = _opt(120.0, 'a watcher healthy this long resets the restart delay', unit='s')
    log_format: str = _opt('text', 'log line format', choices=('text', 'json'))
    log_level: str = _opt('INFO', 'log level', choices=('DEBUG', 'INFO', 'WARNING', 'ERROR'))
    checkpoint_interval_s: float = _opt(
        30.0,
        'how often the Lease holder writes the delivery checkpoint (ConfigMaps next to the Lease) so that a restart '
        'or failover loses no change; 0 turns checkpoints off',
        unit='s',
    )
    kube_timeout_s: float = _opt(10.0, 'timeout of a Kubernetes request (validation GETs); then enqueued unvalidated',
                                 unit='s')  # fmt: skip
    validation_concurrency: int = _opt(8, 'validation GETs in flight at once (signals the VM index misses)',
                                       unit='requests')  # fmt: skip
    shutdown_grace_s: float = _opt(
        10.0,
        'on SIGTERM, how long the queue is drained into the sink before exiting (1 if requests were left)',
        unit='s',
    )
    sink_url: str = _opt('', 'URL the cloudevents sink POSTs each request to (http:// needs --sink-allow-http)')
    sink_ca_file: Path | None = _opt(None, "PEM file of the CA that signed the CloudEvents receiver's certificate")
    sink_allow_http: bool = _opt(False, 'let --sink-url be plain http:// (e.g. an in-cluster broker behind a mesh)')

    def validate(self) -> ServiceSettings:
        """Raise SettingsError with one clear message when a value cannot work."""
        if self.vcenters_file is not None:
            given = [f'--{f.replace("_", "-")}' for f in _VC_FLAGS if getattr(self, f) not in ('', None, False)]
            if given:
                raise SettingsError(f'--vcenters-file cannot be combined with {", ".join(given)}')
        else:
            self._check_vc_flags()
        for f in fields(self):
            if str(f.type) in ('int', 'float'):
                check_number(f.name, getattr(self, f.name), *_LIMITS.get(f.name, _DEFAULT_LIMITS))
        if self.renew_deadline_s >= self.lease_duration_s:
            raise SettingsError('--leader-elect-renew-deadline must be shorter than --leader-elect-lease-duration')
        if self.retry_period_s >= self.renew_deadline_s:
            raise SettingsError('--leader-elect-retry-period must be shorter than --leader-elect-renew-deadline')
        if 0 < self.checkpoint_interval_s < 1:
            raise SettingsError('--checkpoint-interval-s must be 0 (off) or at least 1 s (a ConfigMap write each time)')
        if self.restart_max_s < self.restart_initial_s:
            raise SettingsError('--restart-max-s must not be shorter than --restart-initial-s')
        parse_host_port('--health-probe-bind-address', self.health_probe_bind_address)
        if self.metrics_bind_address != '0':
            parse_host_port('--metrics-bind-address', self.metrics_bind_address)
        self.filter_settings()  # the watched paths and ignored keys after their -add / -remove
        self._check_sink_url()
        _check_names(self)
        return self

    def _check_vc_flags(self) -> None:
        if not self.vc_url:
            raise SettingsError('--vc-url / VMWATCH_VC_URL (or --vcenters-file) is required')
        if self.vc_password_file is None and self.vc_url and (self.vc_user or self.vc_user_file):
            raise SettingsError('--vc-password-file / VMWATCH_VC_PASSWORD_FILE is required')
        try:
            self.vcenters()[0].check()
        except VCenterConfigError as e:
            raise SettingsError(str(e)) from None

    def _check_sink_url(self) -> None:
        if self.sink != 'cloudevents':
            if self.sink_url or self.sink_ca_file is not None:
                raise SettingsError('--sink-url and --sink-ca-file are only for --sink cloudevents')
            return
        if not self.sink_url:
            raise SettingsError('--sink cloudevents needs --sink-url / VMWATCH_SINK_URL')
        if has_user_info(self.sink_url):  # checked first: no later message may echo the URL and its password
            raise SettingsError('--sink-url must not carry user info (user:password@)')
        try:
            parts = urlsplit(self.sink_url)
            valid = parts.scheme in ('https', 'http') and bool(parts.hostname) and parts.port != 0
        except ValueError:
            valid = False
        if not valid:
            raise SettingsError('--sink-url is not an http(s) URL with a host')
        if parts.scheme == 'http' and not self.sink_allow_http:
            raise SettingsError('a plain http:// --sink-url needs --sink-allow-http')
        if parts.scheme == 'http' and self.sink_ca_file is not None:
            raise SettingsError('--sink-ca-file is for an https:// --sink-url')

    def check_files(self) -> ServiceSettings:
        """What validate() cannot see in the values alone: the vCenters file must be usable and the CA files must
        load (checked at start)."""
        for vc in self.vcenters():
            check_ca_file('--vc-ca-file' if self.vcenters_file is None else f'vcenter {vc.name!r}: caFile', vc.ca_file)
        check_ca_file('--sink-ca-file', self.sink_ca_file)
        return self

    def vcenters(self) -> list[VCenter]:
        """The vCenters to watch: the file's (read now), else the one the --vc-* flags define (named `default`)."""
        if self.vcenters_file is None:
            return [
                VCenter(
                    url=self.vc_url,
                    user=self.vc_user,
                    user_file=self.vc_user_file,
                    password_file=self.vc_password_file,
                    ca_file=self.vc_ca_file,
                    thumbprint=self.vc_thumbprint,
                    insecure=self.vc_insecure,
                )
            ]
        try:
            vcenters = load_vcenters_file(self.vcenters_file)
        except VCenterConfigError as e:
            raise SettingsError(f'--vcenters-file: {e}') from None
        for vc in vcenters:
            lease = self.shard_lease_name(vc.name, several=True)
            if len(lease) > _MAX_SHARD_LEASE:
                raise SettingsError(f'--lease-name {self.lease_name!r} and vcenter {vc.name!r} make the Lease name '
                                    f'{lease!r}, longer than {_MAX_SHARD_LEASE} characters')  # fmt: skip
        return vcenters

    def shard_lease_name(self, vcenter: str, *, several: bool | None = None) -> str:
        """The Lease of one vCenter's shard: `<lease-name>-<vcenter>`; the --vc-* flags' one vCenter keeps
        `<lease-name>` (so an upgrade keeps its Lease and checkpoint)."""
        from_file = self.vcenters_file is not None if several is None else several
        return f'{self.lease_name}-{vcenter}' if from_file else self.lease_name

    def filter_settings(self) -> FilterSettings:
        """What counts as a change: the watched paths and ignored keys after their -add / -remove (SettingsError
        for a removal of something not in the list, or no watched path left)."""
        paths = _edit_list('--watched-paths', self.watched_paths, self.watched_paths_add, self.watched_paths_remove,
                           'watched')  # fmt: skip
        if not paths:
            raise SettingsError('--watched-paths: no property path left to watch')
        for path in paths:
            if not _PROPERTY_PATH.fullmatch(path):
                raise SettingsError(f'--watched-paths: {path[:200]!r} is not a property path (e.g. summary.guest; '
                                    'vCenter cannot filter on indexed paths)')  # fmt: skip
        keys = _edit_list(
            '--ignored-extra-config-keys',
            self.ignored_extra_config_keys,
            self.ignored_extra_config_keys_add,
            self.ignored_extra_config_keys_remove,
            'ignored',
        )
        return FilterSettings(
            watched_paths=paths,
            ignored_extra_config_keys=keys,
            cache_max_entries=self.cache_max_entries,
            cache_ttl_s=self.cache_ttl_s,
            signal_on_leave=self.signal_on_leave,
        )

    def resolved_lease_namespace(self) -> str:
        """The Lease's (and the checkpoint's) namespace: the setting, else the pod's namespace, else 'default'."""
        if self.lease_namespace:
            return self.lease_namespace
        try:  # the pod's namespace, as mounted with its service account
            with open('/var/run/secrets/kubernetes.io/serviceaccount/namespace', encoding='utf-8') as f:
                return f.read().strip() or 'default'
        except OSError:
            return 'default'

    def watch_settings(self) -> WatchSettings:
        return WatchSettings(max_wait_s=self.max_wait_s, max_object_updates=self.max_object_updates)


# Bounds of the numeric settings, inclusive: (lowest, highest). Zero, negative, NaN, infinite and absurd values
# exit 2 at start instead of, e.g., a restart delay of 0 s (hundreds of vCenter logins per second).
_LIMITS: dict[str, tuple[float, float]] = {
    'workers': (1, 256),
    'liveness_stall_s': (1.0, 3600.0),  # below 1 s a busy but healthy loop (a large batch) could fail the probe
    'lease_duration_s': (1.0, 3600.0),
    'renew_deadline_s': (0.5, 3600.0),
    'retry_period_s': (0.05, 600.0),
    'max_wait_s': (1, 3600),  # 0 would make WaitForUpdatesEx a busy poll
    'max_object_updates': (1, 100_000),
    'cache_max_entries': (1, 10_000_000),  # ~300 B per VM: 10M is 3 GB
    'cache_ttl_s': (1.0, 365 * 86400.0),
    'restart_initial_s': (0.01, 3600.0),
    'restart_max_s': (0.01, 86400.0),
    'restart_reset_s': (0.1, 86400.0),
    'shutdown_grace_s': (0.0, 3600.0),  # 0: exit at once, nothing drained
    'checkpoint_interval_s': (0.0, 86400.0),  # 0: checkpoints off; else at least 1 s (validate)
    'kube_timeout_s': (0.1, 600.0),
    'validation_concurrency': (1, 1024),
}
_DEFAULT_LIMITS = (0.0, 1e9)  # a numeric setting added without bounds: at least finite and not negative


_VC_FLAGS = ('vc_url', 'vc_user', 'vc_user_file', 'vc_password_file', 'vc_ca_file', 'vc_thumbprint', 'vc_insecure')
_MAX_SHARD_LEASE = 63  # a shard's Lease name is the label value of its checkpoint ConfigMaps (at most 63)


_PROPERTY_PATH = re.compile(r'[A-Za-z][A-Za-z0-9]*(\.[A-Za-z][A-Za-z0-9]*)*')


def _edit_list(flag: str, base: tuple[str, ...], add: tuple[str, ...], remove: tuple[str, ...], what: str
               ) -> tuple[str, ...]:  # fmt: skip
    """`base` plus `add` (in order, without duplicates) minus `remove`; each removed item must be in the list."""
    items = dict.fromkeys((*base, *add))
    for item in remove:
        if item not in items:
            raise SettingsError(f'{flag}-remove: {item[:200]!r} is not {what} (nothing to remove)')
        del items[item]
    return tuple(items)


def check_number(name: str, value: float, low: float, high: float) -> None:
    """SettingsError unless `value` is finite and within [low, high]; the message names flag, variable and unit."""
    if not math.isfinite(value) or not low <= value <= high:
        raise SettingsError(
            f'{flag_name(name)} / {env_name(name)}: {value!r} is out of range (allowed: {low:g} to {high:g})'
        )


def parse_host_port(flag: str, value: str) -> tuple[str, int]:
    """(host, port) of 'host:port', ':port' or '[v6]:port'; SettingsError when it is not one."""
    host, sep, port = value.rpartition(':')
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise SettingsError(f'{flag} {value!r} is not host:port (port 0 to 65535)')
    host = host[1:-1] if host.startswith('[') and host.endswith(']') else host
    if any(c.isspace() or c in '/[]@' for c in host):
        raise SettingsError(f'{flag} {value!r} is not host:port')
    return host, int(port)


def check_ca_file(flag: str, path: Path | None) -> None:
    """SettingsError unless `path` (when given) is a readable PEM bundle with at least one certificate."""
    if path is None:
        return
    import ssl  # not at the top: `vmwatch --help` and `import vmwatch` need no TLS

    try:
        ssl.create_default_context(cafile=str(path))
    except OSError as e:
        reason = e.strerror or getattr(e, 'reason', None) or str(e)
        raise SettingsError(f'{flag} {str(path)!r}: cannot load the CA bundle: {reason}') from None


_DNS_LABEL = re.compile(r'[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?')
_DNS_SUBDOMAIN = re.compile(r'(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')
_QUALIFIED_NAME = re.compile(r'[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?')


def _check_names(s: ServiceSettings) -> None:
    """Kubernetes names the API would refuse on every write: refused at start instead."""
    if not _DNS_SUBDOMAIN.fullmatch(s.lease_name):
        raise SettingsError(f'--lease-name {s.lease_name!r} is not a Kubernetes object name (DNS subdomain)')
    if len(s.lease_name) > _MAX_SHARD_LEASE:  # it labels the checkpoint ConfigMaps and the membership Leases
        raise SettingsError(f'--lease-name {s.lease_name[:80]!r} is longer than {_MAX_SHARD_LEASE} characters')
    if s.lease_namespace and not _DNS_LABEL.fullmatch(s.lease_namespace):
        raise SettingsError(f'--lease-namespace {s.lease_namespace!r} is not a Kubernetes namespace name')
    prefix, _, name = s.annotation.rpartition('/')
    if not _QUALIFIED_NAME.fullmatch(name) or (prefix and not _DNS_SUBDOMAIN.fullmatch(prefix)):
        raise SettingsError(f'--annotation {s.annotation!r} is not an annotation key ([prefix/]name)')


def _public(name: str) -> str:
    f = _FIELDS.get(name)
    return (f.metadata['flag'] if f is not None else '') or name.replace('_', '-')


def flag_name(name: str) -> str:
    """The flag of ServiceSettings field `name`: `--vc-url`, `--leader-elect-lease-duration` (lease_duration_s)."""
    return '--' + _public(name)


def env_name(name: str) -> str:
    """The environment variable of ServiceSettings field `name`: VMWATCH_ and the flag in capitals."""
    return 'VMWATCH_' + _public(name).upper().replace('-', '_')


_DURATION_PART = re.compile(r'(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)')
_DURATION_UNIT_S = {'ns': 1e-9, 'us': 1e-6, 'µs': 1e-6, 'ms': 1e-3, 's': 1.0, 'm': 60.0, 'h': 3600.0}


def parse_whole_seconds(text: str) -> int:
    """A duration (`30s`, `5m`) or plain seconds that is a whole number of seconds; ValueError otherwise."""
    seconds = parse_duration(text)
    if not math.isfinite(seconds) or seconds != int(seconds):
        raise ValueError(text)
    return int(seconds)


def parse_duration(text: str) -> float:
    """Seconds from a Go-style duration (`15s`, `2m`, `1h30m`, `500ms`; a leading `-` allowed) or a plain number of
    seconds (`30`, `0.5`), as Kubernetes controllers spell durations. ValueError for anything else."""
    raw = text.strip()
    try:
        return float(raw)  # plain seconds (also 'nan' / 'inf': the bounds refuse them)
    except ValueError:
        pass
    sign, body = (-1.0, raw[1:]) if raw.startswith('-') else (1.0, raw.removeprefix('+'))
    total, pos = 0.0, 0
    for m in _DURATION_PART.finditer(body):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DURATION_UNIT_S[m.group(2)]
        pos = m.end()
    if not body or pos != len(body):
        raise ValueError(f'{text!r} is not a duration')
    return sign * total


def format_duration(seconds: float) -> str:
    """A Go-style duration that parse_duration reads back: 15s, 5m, 24h, 1h30m, 250ms, 0s."""
    if seconds < 1:
        return f'{seconds * 1000:g}ms' if seconds else '0s'
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f'{hours:g}h' if hours else '', f'{minutes:g}m' if minutes else '', f'{secs:g}s' if secs else '']
    return ''.join(parts)


def _convert(name: str, raw: str, annotation: Any, unit: str = '') -> Any:
    kind = str(annotation)
    try:
        if kind == 'bool':
            return parse_bool(env_name(name), raw)
        if unit == 's' and kind in ('int', 'float'):
            return parse_whole_seconds(raw) if kind == 'int' else parse_duration(raw)
        if kind == 'int':
            return int(raw)
        if kind == 'float':
            return float(raw)
        if kind.startswith('Path'):
            return Path(raw) if raw else None
        if kind.startswith('tuple'):
            return tuple(k.strip() for k in raw.split(',') if k.strip())
    except SettingsError:
        raise
    except ValueError:
        what = 'duration (30s, 2m, 1h30m, or seconds)' if unit == 's' else kind
        if unit == 's' and kind == 'int':
            what = 'duration of whole seconds (30s, 5m, or seconds)'
        raise SettingsError(f'{env_name(name)} / {flag_name(name)}: {raw!r} is not a valid {what}') from None
    return raw


DEPRECATED_BY = 'issue 14'
"""Where the renames of the deprecated aliases are explained (named in each deprecation warning)."""


_ALIAS_NOTES = {'health-addr': ' (/metrics has its own --metrics-bind-address now, default :8080)'}
"""What else a user of a former name must know."""


def _alias_dest(name: str, alias: str) -> str:
    return f'_alias_{name}_{alias.replace("-", "_")}'


def add_service_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per ServiceSettings field, with its unit, default and environment variable in --help; the former
    names of renamed flags are accepted but not shown."""
    for f in fields(ServiceSettings):
        meta = f.metadata
        default = f.default if f.default is not MISSING else None
        unit = ' [s, or a duration: 30s, 2m]' if meta['unit'] == 's' else f' [{meta["unit"]}]' if meta['unit'] else ''
        shown = ','.join(default) if isinstance(default, tuple) else ('' if default is None else default)
        if meta['unit'] == 's' and isinstance(default, float):
            shown = format_duration(default)
        shown = meta['shown'] or shown
        bounds = _LIMITS.get(f.name)
        allowed = f'; {bounds[0]:g} to {bounds[1]:g}' if bounds and str(f.type) in ('int', 'float') else ''
        help_text = f'{meta["help"]}{unit} (default: {shown!s}{allowed}; env {env_name(f.name)})'
        kwargs: dict[str, Any] = {'default': None}
        if meta['choices']:
            kwargs['choices'] = meta['choices']
            if all(c.isupper() for c in meta['choices']):
                kwargs['type'] = str.upper  # --log-level debug works too
        if str(f.type) == 'bool':
            kwargs.update(nargs='?', const='true')  # `--vc-insecure` alone, or `--leader-elect=false`
        metavar = _public(f.name).split('-')[-1].upper()
        if meta['unit'] == 's':
            metavar = 'DURATION'
        elif str(f.type).startswith('tuple'):
            metavar = 'PATHS' if 'paths' in f.name else 'KEYS'
        parser.add_argument(flag_name(f.name), dest=f.name, metavar=metavar, help=help_text, **kwargs)
        for alias in meta['aliases']:
            parser.add_argument(f'--{alias}', dest=_alias_dest(f.name, alias), help=argparse.SUPPRESS, **kwargs)


def _raw_value(args: argparse.Namespace, env: Mapping[str, str], f: Field[Any]) -> tuple[Any, str]:
    """(the raw value of field `f`, the name it came from, or ''): the flag, a former flag, the variable, a former
    variable. An empty variable is unset (a ConfigMap lists them all)."""
    if (raw := getattr(args, f.name, None)) is not None:
        return raw, flag_name(f.name)
    for alias in f.metadata['aliases']:
        if (raw := getattr(args, _alias_dest(f.name, alias), None)) is not None:
            return raw, f'--{alias}'
    if raw := env.get(env_name(f.name)):
        return raw, env_name(f.name)
    for alias in f.metadata['aliases']:
        old = 'VMWATCH_' + alias.upper().replace('-', '_')
        if raw := env.get(old):
            return raw, old
    return None, ''


def deprecated_names(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> list[str]:
    """One warning per former flag or variable that was given (used or overridden), naming its replacement."""
    env = os.environ if environ is None else environ
    found = []
    for f in fields(ServiceSettings):
        for alias in f.metadata['aliases']:
            old_env = 'VMWATCH_' + alias.upper().replace('-', '_')
            note = _ALIAS_NOTES.get(alias, '')
            if getattr(args, _alias_dest(f.name, alias), None) is not None:
                found.append(f'--{alias} is deprecated ({DEPRECATED_BY}): use {flag_name(f.name)}{note}')
            if env.get(old_env):
                found.append(f'{old_env} is deprecated ({DEPRECATED_BY}): use {env_name(f.name)}{note}')
    return found


def load_service_settings(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> ServiceSettings:
    """Flags over VMWATCH_* environment variables over defaults; SettingsError on a bad value. A former name of a
    renamed setting counts below its new name (`deprecated_names` says which were given).

    An empty environment variable counts as unset, so deploy/base/settings.env can list every setting."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in fields(ServiceSettings):
        raw, _source = _raw_value(args, env, f)
        if raw is None:
            continue
        value = _convert(f.name, str(raw), f.type, f.metadata['unit'])
        choices = f.metadata['choices']
        if choices and all(c.isupper() for c in choices):
            value = value.upper()
        if choices and value not in choices:
            raise SettingsError(f'{env_name(f.name)} / {flag_name(f.name)}: {value!r} is not one of {choices}')
        values[f.name] = value
    return ServiceSettings(**values)


_FIELDS: dict[str, Field[Any]] = {f.name: f for f in fields(ServiceSettings)}
