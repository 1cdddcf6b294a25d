# SPDX-License-Identifier: Apache-2.0
"""`vmwatch demo`: the whole service on local servers, with reconcile requests shown as they arrive.

Starts vcsim and etcd + kube-apiserver on 127.0.0.1 (vmwatch.devenv), installs the CRDs, creates a Zone
for the datacenter's VM folder and one VirtualMachine per vcsim VM (their extraConfig names them), runs
the service in-process with a reconciler that prints each request, changes a few VMs (one change is
only an ignored extraConfig key, which must not produce a request) and stops everything.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

__all__ = ['add_parser', 'run']

NAMESPACE = 'demo'


def add_parser(sub: Any) -> None:
    p = sub.add_parser('demo', help='run vmwatch against a local vcsim + kube-apiserver and show the requests')
    p.add_argument('--vms', type=_vm_count, default=4, help='VMs per vcsim resource pool, 1 to 500 (default: 4)')
    p.add_argument('--state-dir', type=Path, default=None, help='where server state and logs go (default: temp)')
    p.set_defaults(func=run)


def _vm_count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not a whole number') from None
    if not 1 <= n <= 500:
        raise argparse.ArgumentTypeError(f'{n} is not between 1 and 500')
    return n


def run(args: argparse.Namespace) -> int:
    from vmwatch import devenv

    state = args.state_dir or Path(tempfile.mkdtemp(prefix='vmwatch-demo-'))
    out = sys.stdout
    say(out, f'state and server logs: {state}')
    started = time.monotonic()
    vc = devenv.VcsimServer(
        state_dir=state / 'vcsim',
        args=('-cluster', '1', '-host', '2', '-standalone-host', '0', '-vm', str(args.vms), '-autostart=false'),
    )
    kube = devenv.KubeServer(state_dir=state / 'kube')
    try:
        vc.start()
        say(out, f'vcsim {devenv.GOVMOMI_VERSION} at {vc.url} ({vc.vms} VMs)')
        kube.start()
        say(out, f'kube-apiserver {devenv.KUBERNETES_VERSION} + etcd {devenv.ETCD_VERSION} at {kube.url}')
        say(out, f'servers up in {time.monotonic() - started:.1f} s')
        return asyncio.run(_demo(vc, kube, out))
    finally:
        kube.stop()
        vc.stop()


def say(out: TextIO, text: str) -> None:
    print(f'# {text}', file=out, flush=True)


async def _demo(vc: Any, kube: Any, out: TextIO) -> int:
    from kubernetes import client

    from vmwatch.kube.crds import api_client, install_crds
    from vmwatch.service import Service
    from vmwatch.settings import ServiceSettings
    from vmwatch.vsphere import Endpoint, Session
    from vmwatch.vsphere.inventory import power_on, set_extra_config, vm_folder, vms_under

    api = api_client(kube.kubeconfig)
    install_crds(api)
    core: Any = client.CoreV1Api(api)
    objects: Any = client.CustomObjectsApi(api)
    core.create_namespace({'metadata': {'name': NAMESPACE}})

    session = Session(Endpoint(url=vc.url, user=vc.user, password_file=vc.password_file, ca_file=vc.ca_file))
    await asyncio.to_thread(session.login)
    folder = await asyncio.to_thread(vm_folder, session)
    vms = await asyncio.to_thread(vms_under, session, folder)
    say(out, f'{len(vms)} VMs under {folder}; creating Zone {NAMESPACE}/zone-a and one VirtualMachine each')
    objects.create_namespaced_custom_object('topology.tanzu.vmware.com', 'v1alpha1', NAMESPACE, 'zones', {
        'apiVersion': 'topology.tanzu.vmware.com/v1alpha1', 'kind': 'Zone',
        'metadata': {'name': 'zone-a', 'namespace': NAMESPACE},
        'spec': {'availabilityZoneReference': {'apiVersion': 'v1', 'name': 'az-a'},
                 'managedVMs': {'folderMoID': folder.value}},
    })  # fmt: skip
    names = {}
    for ref, vm_name in vms:
        name = vm_name.lower().replace('_', '-')
        names[ref.value] = name
        objects.create_namespaced_custom_object('vmoperator.vmware.com', 'v1alpha6', NAMESPACE, 'virtualmachines', {
            'apiVersion': 'vmoperator.vmware.com/v1alpha6', 'kind': 'VirtualMachine',
            'metadata': {'name': name, 'namespace': NAMESPACE}, 'spec': {'powerState': 'PoweredOff'},
        })  # fmt: skip
        await asyncio.to_thread(set_extra_config, session, ref, {'vmservice.namespacedName': f'{NAMESPACE}/{name}'})

    settings = ServiceSettings(
        vc_url=vc.url, vc_user=vc.user, vc_password_file=vc.password_file, vc_ca_file=vc.ca_file,
        leader_elect=False, max_wait_s=30,
    ).validate()  # fmt: skip
    service = Service(settings, api=api, disabled=False)
    received: list[dict[str, Any]] = []

    async def reconciler() -> None:
        async for key in service.queue:
            record = {'namespace': key[0], 'name': key[1], 't': round(time.monotonic() - t0, 3)}
            received.append(record)
            print(json.dumps(record), file=out, flush=True)
            service.queue.done(key)

    t0 = time.monotonic()
    await service.start()
    consumer = asyncio.create_task(reconciler())
    service.start_watching()
    try:
        await _until(lambda: service.watching, 60, 'the watcher to start')
        say(out, 'watching; every VM entered scope unverified, so each is requested once:')
        await _until(lambda: len(received) >= len(vms), 30, 'the initial requests')
        first, second, third = (vms + vms + vms)[:3]
        steps = [
            (f'power on {first[1]}', lambda: power_on(session, first[0]), True),
            (f'set guestinfo.demo=1 on {second[1]}',
             lambda: set_extra_config(session, second[0], {'guestinfo.demo': '1'}), True),
            (f'set the ignored key vmotion.checkpointFBSize on {third[1]} (no request expected)',
             lambda: set_extra_config(session, third[0], {'vmotion.checkpointFBSize': str(time.time_ns())}), False),
        ]  # fmt: skip
        for text, action, expect in steps:
            before = len(received)
            say(out, text)
            await asyncio.to_thread(action)
            watcher = service.shard.slot.watcher
            if watcher is not None:
                await watcher.sync(timeout_s=30)
            await asyncio.sleep(0.2)  # the queue hand-off to the reconciler task
            got = len(received) - before
            if expect and got == 0:
                await _until(lambda b=before: len(received) > b, 10, f'a request after: {text}')
            say(out, f'-> {len(received) - before} request(s)')
        say(out, f'done: {len(received)} requests; cache {service.shard.decider.cache_stats()}')
        return 0
    finally:
        await service.stop()
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
        await asyncio.to_thread(session.logout)
        await asyncio.to_thread(api.close)


async def _until(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f'timed out after {timeout_s} s waiting for {what}')
        await asyncio.sleep(0.05)
