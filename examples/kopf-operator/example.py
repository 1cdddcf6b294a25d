# SPDX-License-Identifier: Apache-2.0
"""A kopf operator whose VirtualMachine reconcile runs on Kubernetes changes *and* on vSphere changes.

kopf calls `reconcile` when a VirtualMachine is created, resumed or its spec changes; `vmwatch.Service`, started
in kopf's event loop, calls the same `reconcile` when the VM changed on vSphere (power, hardware, extraConfig...).
The reconcile is level-based: it reads the VirtualMachine as it is now and does its work, whoever asked.

    export KUBECONFIG=... VMWATCH_VC_URL=https://vc/sdk VMWATCH_VC_USER=... VMWATCH_VC_PASSWORD_FILE=... \\
        VMWATCH_VC_CA_FILE=...        # every `vmwatch run` setting is read from its VMWATCH_* variable
    kopf run --standalone --all-namespaces examples/kopf-operator/example.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes import client

import vmwatch
from vmwatch.kube.crds import api_client
from vmwatch.settings import SettingsError, load_service_settings

GROUP, VERSION, PLURAL = 'vmoperator.vmware.com', 'v1alpha6', 'virtualmachines'
LAST_RECONCILE = 'example.vmwatch.dev/last-reconcile'  # every run: when, and who asked
LAST_VSPHERE_CHANGE = 'example.vmwatch.dev/last-vsphere-change'  # runs vSphere asked for: when, why, which paths


def reconcile(api: client.ApiClient, namespace: str, name: str, *, signals: Sequence[vmwatch.Signal] = ()) -> None:
    """Bring one VirtualMachine in line with the world (blocking: kopf and the drain run it in a thread).
    `signals` is what vSphere said about the VM, empty when kopf asked. A real operator would read vSphere
    here and act; this one records the run in two annotations."""
    objects = client.CustomObjectsApi(api)
    try:
        vm: Any = objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except client.ApiException as e:
        if e.status == 404:
            return  # deleted meanwhile: nothing left to reconcile
        raise
    now = datetime.now(UTC).isoformat(timespec='milliseconds')
    uid = vm.get('status', {}).get('uniqueID', '')
    annotations = {LAST_RECONCILE: json.dumps({'at': now, 'by': 'vsphere' if signals else 'kubernetes', 'vm': uid})}
    if signals:
        annotations[LAST_VSPHERE_CHANGE] = json.dumps({
            'at': now,
            'reasons': sorted({s.reason for s in signals}),  # 'changed', 'entered', ...
            'changed': sorted({path for s in signals for path in s.changed}),  # e.g. summary.runtime.powerState
        })  # fmt: skip
    objects.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name,
                                           {'metadata': {'annotations': annotations}},
                                           field_manager='vmwatch-kopf-example')  # fmt: skip


# -- Kubernetes asks: kopf's own handlers ------------------------------------------------------------------
@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field='spec')  # not on our own annotation writes
def vm_changed_in_kubernetes(namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    reconcile(memo.api, str(namespace), name)  # an exception: kopf retries with its own backoff


# -- vSphere asks: vmwatch's work queue, drained in kopf's event loop -------------------------------------
async def drain(service: vmwatch.Service, api: client.ApiClient, logger: kopf.Logger) -> None:
    queue = service.queue
    async for key in queue:  # (namespace, name); a key is never handed out twice at once
        try:
            await asyncio.to_thread(reconcile, api, *key, signals=service.signals(key))
        except Exception as e:
            logger.warning(f'reconcile of {key[0]}/{key[1]} failed, retrying with backoff: {e}')
            queue.add_rate_limited(key, priority=queue.priority_of(key) or 0)
        else:
            queue.forget(key)  # success: reset its backoff, and count the change as delivered
        finally:
            queue.done(key)  # always: a key added again meanwhile is handed out once more


@kopf.on.startup()
async def start_vmwatch(memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    try:
        settings = load_service_settings(argparse.Namespace()).validate().check_files()  # the VMWATCH_* variables
    except SettingsError as e:
        raise SystemExit(f'vmwatch: {e}') from None  # bad settings: exit with this one line
    memo.api = api_client(settings.kubeconfig)  # VMWATCH_KUBECONFIG, else $KUBECONFIG, else in-cluster
    memo.service = vmwatch.Service(settings, api=memo.api)
    await memo.service.start()  # the VirtualMachine index and the Zone controller
    memo.service.start_watching()  # no Lease election here: run this operator as one replica
    memo.drain = asyncio.create_task(drain(memo.service, memo.api, logger), name='vmwatch-drain')


@kopf.on.probe(id='vmwatch')
def vmwatch_ready(memo: kopf.Memo, **_: Any) -> str:
    return str(memo.service.ready()[1])  # in kopf's /healthz (`kopf run --liveness=...`): 'watching', or why not


@kopf.on.cleanup()
async def stop_vmwatch(memo: kopf.Memo, **_: Any) -> None:
    memo.drain.cancel()
    await asyncio.gather(memo.drain, return_exceptions=True)
    await memo.service.stop()  # stops watching and writes the last delivery checkpoint
    memo.api.close()
