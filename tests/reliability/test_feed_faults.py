# SPDX-License-Identifier: Apache-2.0
"""Feed faults (issue 11, rows A3, A6, B1, B2): a bad object, a full queue, a hung kube-apiserver and a hung
vCenter, each against the real servers. None stalls or poisons the rest of the feed, and none loses a signal."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from kubernetes import client
from rel_helpers import counter, make_fleet, record_delivered, topology
from service_env import VMS, service_env, until

from conftest import Recorder
from vmwatch import devenv
from vmwatch.devenv import VcsimServer
from vmwatch.kube.index import VirtualMachineIndex
from vmwatch.kube.priority import PRIORITY_ANNOTATION, PRIORITY_MAX
from vmwatch.kube.zones import ZoneCache
from vmwatch.vsphere import inventory as inv

pytestmark = pytest.mark.anyio

log = logging.getLogger(__name__)


@contextmanager
def stopped(proc: Any) -> Iterator[None]:
    """The process hangs (SIGSTOP: sockets stay open, nothing answers) until the block ends (SIGCONT)."""
    proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGCONT)


def annotate(env: Any, name: str, annotations: dict[str, str]) -> None:
    env.objects.patch_namespaced_custom_object(
        *VMS[:2], env.namespace, VMS[2], name, {'metadata': {'annotations': annotations}},
        _content_type='application/merge-patch+json',
    )  # fmt: skip


async def test_b2_hung_vcenter_is_noticed_within_max_wait_and_readyz_says_so(
    kube_api: client.ApiClient, vcsim_factory: Any, recorder: Recorder
) -> None:
    vc: VcsimServer = vcsim_factory(*topology(2))
    max_wait_s = 2
    async with service_env(kube_api, vc, max_wait_s=max_wait_s) as env:
        fleet = await make_fleet(env, 2)
        assert env.service.ready() == (True, 'watching')
        proc = vc._proc
        assert proc is not None
        with stopped(proc):
            stopped_at = time.monotonic()
            await until(lambda: not env.service.ready()[0], 'not ready', timeout_s=max_wait_s + 60)
            detected_s = time.monotonic() - stopped_at
            reason = env.service.ready()[1]
        log.info('hung vCenter noticed after %.1f s (%s)', detected_s, reason)
        resumed_at = time.monotonic()
        await until(lambda: env.service.ready()[0], 'ready again', timeout_s=60)
        recovered_s = time.monotonic() - resumed_at
        await env.settle()
        await fleet.change_each()
        await record_delivered(
            recorder, 'B2', fleet, test='test_feed_faults.py::test_b2_hung_vcenter_is_noticed_within_max_wait_and_'
            'readyz_says_so (and tests/unit/test_feed_bad_objects.py::test_ready_needs_the_index_synced)',
            did=f"the raw wait's read timeout (max wait + 30 s margin) ends the hung wait and /readyz says 503 at "
            f"once (within {max_wait_s + 35} s with a {max_wait_s} s max wait; main said 200 until the cleanup's "
            '60 s DestroyPropertyFilter timeout had passed too, 92 s); /readyz is also 503 until the VirtualMachine '
            'index has synced; after SIGCONT the service is ready again and every later change is signalled',
        )  # fmt: skip
        assert detected_s < max_wait_s + 35, detected_s
        assert recovered_s < 30, recovered_s


async def test_b1_hung_kube_apiserver_holds_only_the_signal_that_needs_it(
    kube_api: client.ApiClient, kube_server: devenv.KubeServer, vcsim_factory: Any, recorder: Recorder
) -> None:
    vc: VcsimServer = vcsim_factory(*topology(2))
    timeout_s = 3.0
    async with service_env(kube_api, vc, kube_timeout_s=timeout_s) as env:
        fleet = await make_fleet(env, 1)
        spare = [ref for ref, _ in await env.vsphere(inv.vms_under, fleet.folder)][1]
        service, ns = env.service, env.namespace
        apiserver = kube_server._apiserver
        assert apiserver is not None
        with stopped(apiserver):
            # a VM named by extraConfig that the index does not have: its validation needs a GET, which hangs
            await env.vsphere(inv.set_extra_config, spare, {'vmservice.namespacedName': f'{ns}/not-indexed'})
            await until(lambda: service.validating >= 1, 'the validation GET in flight')
            changed_at = time.monotonic()
            await fleet.change('vm-0')  # indexed: validated from the watch cache, no GET
            await env.expect_request('vm-0', timeout_s=timeout_s - 0.5)
            indexed_s = time.monotonic() - changed_at
            await env.expect_request('not-indexed', timeout_s=timeout_s + 10)
            unindexed_s = time.monotonic() - changed_at
        log.info('indexed VM enqueued after %.3f s; the other after %.1f s', indexed_s, unindexed_s)
        await record_delivered(
            recorder, 'B1', fleet, test='test_feed_faults.py::test_b1_hung_kube_apiserver_holds_only_the_signal_'
            'that_needs_it',
            did='validation GETs (index misses) run concurrently (at most --validation-concurrency) with a '
            f"--kube-timeout-s; the indexed VM's request is enqueued from the watch cache while the other VM's "
            'GET hangs (within 1 s of its change, where main held it until the server answered), and the other is '
            f'enqueued unvalidated after the {timeout_s:.0f} s timeout',
        )  # fmt: skip
        assert indexed_s < 1.0, indexed_s
        assert unindexed_s >= timeout_s - 1.0, unindexed_s
        assert counter(service.metrics.validation_gets, vcenter='default') >= 1


async def test_a6_full_queue_is_counted_logged_not_ready_and_loses_nothing(
    kube_api: client.ApiClient, vcsim_factory: Any, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    vc: VcsimServer = vcsim_factory(*topology(2))
    async with service_env(kube_api, vc) as env:
        fleet = await make_fleet(env, 2)
        service, queue = env.service, env.service.queue
        queue.max_depth = 1
        assert queue.add_after(('other', 'held'), 3600)  # one held key: the queue is full
        assert service.ready() == (False, 'the work queue is full (1 keys): new requests are dropped')
        before = len(env.received)
        await fleet.change('vm-0')
        await env.settle()
        assert (env.namespace, 'vm-0') not in env.received[before:]
        assert counter(service.metrics.dropped, name='virtualmachine') == 1
        assert any('work queue is full' in r.getMessage() and 'vm-0' in r.getMessage() for r in caplog.records)
        assert fleet.lost() == ['vm-0']
        queue.max_depth = 10  # room again
        assert service.ready() == (True, 'watching')
        # the dropped VM was forgotten: its next sighting signals, even one that changes only an ignored key
        await fleet.change_ignored('vm-0')
        await env.expect_request('vm-0', after=before)
        await fleet.change('vm-1')
        await record_delivered(
            recorder, 'A6', fleet, test='test_feed_faults.py::test_a6_full_queue_is_counted_logged_not_ready_and_'
            'loses_nothing',
            did='a refused request is counted (`vmwatch_requests_dropped_total`), logged (rate-limited) and makes '
            '/readyz 503 while the queue is full; the VM is forgotten, so its next sighting (here an ignored-only '
            'change) signals it once the queue has room',
        )  # fmt: skip


LOOSE_GROUP = 'feedtest.vmwatch.dev'  # schemaless copies of the CRDs: objects of any shape, as a bad CRD allows


def install_loose_crds(api: client.ApiClient) -> None:
    """virtualmachines and zones in LOOSE_GROUP with no schema at all (idempotent; the API server is shared)."""
    ext: Any = client.ApiextensionsV1Api(api)
    for plural, kind in (('virtualmachines', 'VirtualMachine'), ('zones', 'Zone')):
        name = f'{plural}.{LOOSE_GROUP}'
        body = {
            'apiVersion': 'apiextensions.k8s.io/v1',
            'kind': 'CustomResourceDefinition',
            'metadata': {'name': name},
            'spec': {
                'group': LOOSE_GROUP,
                'names': {'plural': plural, 'singular': kind.lower(), 'kind': kind},
                'scope': 'Namespaced',
                'versions': [{
                    'name': 'v1', 'served': True, 'storage': True,
                    'schema': {'openAPIV3Schema': {'type': 'object', 'x-kubernetes-preserve-unknown-fields': True}},
                }],
            },
        }  # fmt: skip
        try:
            ext.create_custom_resource_definition(body)
        except client.ApiException as e:
            if e.status != 409:
                raise
        deadline = time.monotonic() + 30
        while not any(
            c.type == 'Established' and c.status == 'True'
            for c in (ext.read_custom_resource_definition(name).status.conditions or ())
        ):
            assert time.monotonic() < deadline, f'{name} not established'
            time.sleep(0.1)


def bad_objects_logged(caplog: pytest.LogCaptureFixture, name: str, reason: str) -> int:
    return sum(1 for r in caplog.records if f'/{name}:' in r.getMessage() and f'({reason})' in r.getMessage())


async def test_a3_a_bad_object_does_not_poison_the_kubernetes_feed(
    kube_api: client.ApiClient, vcsim_factory: Any, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    vc: VcsimServer = vcsim_factory(*topology(2))
    async with service_env(kube_api, vc) as env:
        service, ns = env.service, env.namespace
        # the real CRD: annotations are strings, so the priority is where a value can be out of range or garbage
        env.create_vm('poison')
        annotate(env, 'poison', {PRIORITY_ANNOTATION: '3000000000'})  # > int32: today the index fails for good
        env.create_vm('garbage')
        annotate(env, 'garbage', {PRIORITY_ANNOTATION: '9' * 5000})  # beyond int64 (and Python's int() limit)
        fleet = await make_fleet(env, 2)  # VMs created after the bad ones still reach the index
        assert service.index.get(ns, 'poison') == ('', False, PRIORITY_MAX)  # clamped to the int32 range
        assert service.index.get(ns, 'garbage') is not None
        annotate(env, 'poison', {'touch': '1'})  # a second event of the same object: counted, not logged again
        await env.index_has('vm-0')
        env.create_vm('after')
        await env.index_has('after')
        metric = service.metrics.bad_objects
        assert counter(metric, resource='virtualmachine', reason='priority_out_of_range') >= 2
        assert counter(metric, resource='virtualmachine', reason='bad_priority') >= 1
        assert bad_objects_logged(caplog, 'poison', 'priority_out_of_range') == 1
        assert b'vmwatch_bad_objects_total{reason="priority_out_of_range",resource="virtualmachine"}' in (
            service.metrics.exposition()
        )
        # a schemaless CRD lets any shape through: the same index code must take wrong types in its stride
        install_loose_crds(env.api)
        loose = client.CustomObjectsApi(env.api)
        shapes: dict[str, dict[str, Any]] = {
            'status-a-string': {'status': 'a string'},
            'uniqueid-an-int': {'status': {'uniqueID': 42}},
            'conditions-garbage': {'status': {'uniqueID': 'vm-c', 'conditions': ['x', 3]}, 'spec': 'nope'},
            'good': {'status': {'uniqueID': 'vm-good'}},
        }
        for name, fields in shapes.items():
            body = {'apiVersion': f'{LOOSE_GROUP}/v1', 'kind': 'VirtualMachine', 'metadata': {'name': name}, **fields}
            loose.create_namespaced_custom_object(LOOSE_GROUP, 'v1', ns, 'virtualmachines', body)
        for name, fields in {
            'zone-spec-a-string': {'spec': 'x'},
            'zone-managed-a-list': {'spec': {'managedVMs': [1]}},
            'zone-folder-an-int': {'spec': {'managedVMs': {'folderMoID': 7}}},
            'zone-good': {'spec': {'managedVMs': {'folderMoID': 'group-v3'}}},
        }.items():
            body = {'apiVersion': f'{LOOSE_GROUP}/v1', 'kind': 'Zone', 'metadata': {'name': name}, **fields}
            loose.create_namespaced_custom_object(LOOSE_GROUP, 'v1', ns, 'zones', body)
        vms = VirtualMachineIndex(env.api, group=LOOSE_GROUP, version='v1')
        zones = ZoneCache(env.api)
        zones.path = f'/apis/{LOOSE_GROUP}/v1/zones'
        with vms:
            zones.start()
            try:
                assert await vms.wait_synced_async(30) and await asyncio.to_thread(zones.wait_synced, 30)
                assert vms.get(ns, 'good') == ('vm-good', False, 1) and vms.by_unique_id('vm-good') == (ns, 'good')
                for name in ('status-a-string', 'uniqueid-an-int', 'conditions-garbage'):
                    assert vms.get(ns, name) is not None and vms.get(ns, name)[0] in ('', 'vm-c'), name  # type: ignore[index]
                assert {'bad_status', 'bad_unique_id', 'bad_conditions'} <= set(vms.bad_objects.counts)
                kept = {z['metadata']['name'] for z in zones.zones() if z['metadata']['namespace'] == ns}
                assert kept == {'zone-good'}, kept
                assert zones.bad_objects.counts['bad_spec'] == 3
                assert vms.last_error is None and zones.last_error is None  # nothing failed: no retry loop
            finally:
                await asyncio.to_thread(zones.stop)
                for plural in ('virtualmachines', 'zones'):
                    for obj in loose.list_namespaced_custom_object(LOOSE_GROUP, 'v1', ns, plural)['items']:
                        loose.delete_namespaced_custom_object(LOOSE_GROUP, 'v1', ns, plural, obj['metadata']['name'])
        await fleet.change_each()
        await record_delivered(
            recorder, 'A3', fleet, test='test_feed_faults.py::test_a3_a_bad_object_does_not_poison_the_kubernetes_feed'
            ' (and tests/unit/test_feed_bad_objects.py)',
            did='a priority annotation beyond int32 is clamped to it, one that is not an int64 is ignored; fields of '
            'the wrong type (status a string, uniqueID an int, conditions garbage) count as absent; a Zone whose '
            'spec cannot name a folder is not kept; each is counted (`vmwatch_bad_objects_total{resource,reason}`) '
            'and logged once, and the VM index and the Zone cache keep listing and watching everything else',
        )  # fmt: skip


@pytest.mark.anyio
async def test_zone_reads_and_patches_time_out_on_a_hung_api_server(kube_server: Any, kube_api: Any) -> None:
    """B1: every Kubernetes call has a timeout, the Zone controller's finalizer patches and reads too."""
    from vmwatch.kube.zones import custom_objects, patch_finalizers

    ns = 'zt-' + uuid.uuid4().hex[:8]
    client.CoreV1Api(kube_api).create_namespace({'metadata': {'name': ns}})
    objects = custom_objects(kube_api)
    zone = objects.create_namespaced_custom_object('topology.tanzu.vmware.com', 'v1alpha1', ns, 'zones', {
        'apiVersion': 'topology.tanzu.vmware.com/v1alpha1', 'kind': 'Zone', 'metadata': {'name': 'z', 'namespace': ns},
        'spec': {'availabilityZoneReference': {'apiVersion': 'v1', 'name': 'a'}}})  # fmt: skip
    started = time.monotonic()
    with stopped(kube_server._apiserver):
        with pytest.raises(Exception):  # noqa: B017 - urllib3's timeout error, whatever its retries wrap it in
            await asyncio.wait_for(patch_finalizers(objects, zone, ['example.com/x'], timeout_s=1.0), 30)
    took = time.monotonic() - started
    assert took < 20, took  # bounded by the timeout and the client's retries, not by the hang
    objects.delete_namespaced_custom_object('topology.tanzu.vmware.com', 'v1alpha1', ns, 'zones', 'z')
