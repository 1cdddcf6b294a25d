# SPDX-License-Identifier: Apache-2.0
"""Events on Zones from a real `vmwatch run` (vcsim + kube-apiserver): FolderWatched, FolderMissing and
WatchRemoved, once per change of state (not once per reconcile), written with the field manager `vmwatch`."""

from __future__ import annotations

import time
from typing import Any

import pytest
from kubernetes import client
from probes import http_get, wait_until
from test_run_cmd import run_env  # noqa: F401  (the fixture: a namespace, zone-a on a real folder, `vmwatch run`)

from vmwatch.vsphere import inventory as inv

pytestmark = pytest.mark.servers

ZONES = ('topology.tanzu.vmware.com', 'v1alpha1')


def zone(run_env: Any, name: str, folder: str) -> None:  # noqa: F811
    run_env.objects.create_namespaced_custom_object(*ZONES, run_env.namespace, 'zones', {
        'apiVersion': 'topology.tanzu.vmware.com/v1alpha1', 'kind': 'Zone',
        'metadata': {'name': name, 'namespace': run_env.namespace},
        'spec': {'availabilityZoneReference': {'apiVersion': 'v1', 'name': 'a'}, 'managedVMs': {'folderMoID': folder}},
    })  # fmt: skip


def events(core: client.CoreV1Api, namespace: str, zone_name: str) -> list[Any]:
    listed = core.list_namespaced_event(namespace, field_selector=f'involvedObject.name={zone_name}')
    return [e for e in listed.items if e.involved_object.kind == 'Zone']


def reasons(core: client.CoreV1Api, namespace: str, zone_name: str) -> list[str]:
    # in the order written: creation timestamps have whole seconds, etcd's resourceVersions grow
    written = sorted(events(core, namespace, zone_name), key=lambda e: int(e.metadata.resource_version))
    return [e.reason for e in written]


def test_zone_events_folder_watched_missing_and_removed(run_env: Any, kube_api: Any) -> None:  # noqa: F811
    ns, objects = run_env.namespace, run_env.objects
    core = client.CoreV1Api(kube_api)
    folder_b = inv.create_folder(run_env.session, inv.vm_folder(run_env.session), f'{ns}-b')
    zone(run_env, 'zone-missing', 'group-v999999')  # no such folder on this vCenter
    p = run_env.start('a')
    wait_until(lambda: http_get(f'{p.base}/readyz')[1] == 'watching\n', 'watching')

    wait_until(lambda: reasons(core, ns, 'zone-a') == ['FolderWatched'], 'FolderWatched on zone-a')
    (watched,) = events(core, ns, 'zone-a')
    assert watched.type == 'Normal' and 'on vCenter default' in watched.message, watched
    assert {f.manager for f in watched.metadata.managed_fields or []} == {'vmwatch'}
    wait_until(lambda: reasons(core, ns, 'zone-missing') == ['FolderMissing'], 'FolderMissing on zone-missing')
    (missing,) = events(core, ns, 'zone-missing')
    assert missing.type == 'Warning' and 'Folder:group-v999999 does not exist' in missing.message, missing

    zone(run_env, 'zone-b', folder_b.value)
    wait_until(lambda: reasons(core, ns, 'zone-b') == ['FolderWatched'], 'FolderWatched on zone-b')
    for i in range(3):  # reconciles without a change of state: no new Event
        objects.patch_namespaced_custom_object(*ZONES, ns, 'zones', 'zone-a', {'metadata': {'labels': {'n': str(i)}}},
                                               _content_type='application/merge-patch+json')  # fmt: skip
    objects.delete_namespaced_custom_object(*ZONES, ns, 'zones', 'zone-b')
    wait_until(lambda: reasons(core, ns, 'zone-b') == ['FolderWatched', 'WatchRemoved'], 'WatchRemoved on zone-b')
    time.sleep(1.0)  # the missing folder is retried with backoff meanwhile (many reconciles)
    assert reasons(core, ns, 'zone-a') == ['FolderWatched']
    assert reasons(core, ns, 'zone-missing') == ['FolderMissing']
    assert reasons(core, ns, 'zone-b') == ['FolderWatched', 'WatchRemoved']

    objects.delete_namespaced_custom_object(*ZONES, ns, 'zones', 'zone-missing')  # its finalizer goes while we run
    wait_until(lambda: not [z for z in objects.list_namespaced_custom_object(*ZONES, ns, 'zones')['items']
                            if z['metadata']['name'] == 'zone-missing'], 'zone-missing gone')  # fmt: skip
    assert reasons(core, ns, 'zone-missing') == ['FolderMissing']  # it was never watched: no WatchRemoved
    assert p.stop() == 0
