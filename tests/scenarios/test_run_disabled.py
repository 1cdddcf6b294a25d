# SPDX-License-Identifier: Apache-2.0
"""The feature switch end to end: `ASYNC_SIGNAL_DISABLED=true vmwatch run` against vcsim + kube-apiserver.

Disabled, the process stays up and ready but idle: no vCenter session (so no watcher), no Lease, no request
when a watched VM changes; and a Zone deleted meanwhile is released (spec 5: the "disabled" error is
tolerated on delete), not stuck on the finalizer. An enabled process started afterwards on the same setup
signals the VM, which shows the change was one to signal (and is the sync point for the negative check).
"""

from __future__ import annotations

from typing import Any

from kubernetes import client
from probes import http_get, wait_until
from test_run_cmd import _other_sessions, run_env  # noqa: F401  (`run_env` is a fixture)

from vmwatch.settings import FINALIZER

ZONES = ('topology.tanzu.vmware.com', 'v1alpha1')


def test_disabled_run_is_idle_and_lets_zones_go(run_env: Any) -> None:  # noqa: F811
    ns, objects = run_env.namespace, run_env.objects
    off = run_env.start('off', ASYNC_SIGNAL_DISABLED='true')
    wait_until(lambda: http_get(f'{off.base}/readyz') == (200, 'idle: async signal disabled\n'), 'readyz: idle')
    assert http_get(f'{off.base}/healthz')[0] == 200

    # a Zone finalized by an earlier (enabled) run is deleted while the feature is off: it must go
    folder = run_env.objects.get_namespaced_custom_object(*ZONES, ns, 'zones', 'zone-a')['spec']['managedVMs']
    objects.create_namespaced_custom_object(*ZONES, ns, 'zones', {
        'apiVersion': 'topology.tanzu.vmware.com/v1alpha1', 'kind': 'Zone',
        'metadata': {'name': 'zone-gone', 'namespace': ns, 'finalizers': [FINALIZER]},
        'spec': {'availabilityZoneReference': {'apiVersion': 'v1', 'name': 'g'}, 'managedVMs': folder},
    })  # fmt: skip
    objects.delete_namespaced_custom_object(*ZONES, ns, 'zones', 'zone-gone')

    def zone_gone() -> bool:
        try:
            objects.get_namespaced_custom_object(*ZONES, ns, 'zones', 'zone-gone')
        except client.ApiException as e:
            return e.status == 404
        return False

    wait_until(zone_gone, 'the deleted zone released while disabled', timeout_s=15)

    # a named VM changes in the zone's folder
    run_env.named_vm('vm-a')
    run_env.vm_change(0, {'vmservice.namespacedName': f'{ns}/vm-a'})
    assert _other_sessions(run_env.session) == set(), 'a disabled vmwatch logs in to vCenter'
    # the Lease is still elected while disabled: only its holder writes (the Zone finalizers above)
    leases = client.CoordinationV1Api(objects.api_client).list_namespaced_lease(ns).items
    assert [lease.metadata.name for lease in leases] == ['vmwatch']

    # the control: an enabled process on the same setup signals vm-a
    on = run_env.start('on', VMWATCH_LEASE_NAME='vmwatch-on')  # its own Lease: the disabled process holds 'vmwatch'
    wait_until(lambda: any(line['name'] == 'vm-a' for line in on.lines()), 'the enabled process signals vm-a')
    assert off.proc.poll() is None, 'the disabled process exited'
    assert off.lines() == []  # nothing emitted while disabled
    assert http_get(f'{off.base}/readyz') == (200, 'idle: async signal disabled\n')
    _code, metrics = http_get(f'{off.metrics_base}/metrics')
    values = {ln.split(' ')[0]: ln.split(' ')[1] for ln in metrics.splitlines() if ln and not ln.startswith('#')}
    assert float(values.get('vmwatch_batches_total', '0')) == 0, metrics
    assert off.stop() == 0
    assert [ln for ln in off.err_path.read_text().splitlines() if ' ERROR ' in ln or ' WARNING ' in ln] == []
