# SPDX-License-Identifier: Apache-2.0
"""Kubernetes-side faults (issue 8, rows f and j): the service survives them and loses no signal."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes import config as kconfig
from rel_helpers import make_fleet, record_delivered, topology
from service_env import service_env, until
from test_kube_index import compact_etcd

from conftest import Recorder
from vmwatch import devenv
from vmwatch.kube.crds import install_crds
from vmwatch.vsphere import inventory as inv

pytestmark = pytest.mark.anyio

N = 3


async def test_f_kube_apiserver_restarted_and_410_gone(
    kube_api: client.ApiClient, kube_server: devenv.KubeServer, vcsim_factory: Any, recorder: Recorder
) -> None:
    vc = vcsim_factory(*topology(N + 1))
    async with service_env(kube_api, vc) as env:
        fleet = await make_fleet(env, N)
        spare = [ref for ref, _ in await env.vsphere(inv.vms_under, fleet.folder)][N]
        gone_before = env.service.index.stats.relists_gone
        # a write the VM index does not see, then compaction: its resourceVersion is too old after the restart
        client.CoreV1Api(kube_api).create_namespaced_config_map(env.namespace, {'metadata': {'name': 'bump'}})
        compact_etcd(kube_server.etcd_port)
        restart = asyncio.create_task(asyncio.to_thread(kube_server.restart_apiserver))
        await fleet.change('vm-0')  # while kube-apiserver is going down / down / coming back
        await restart
        env.create_vm('vm-new', unique_id=spare.value)  # created after the restart: learnt by the relist/watch
        fleet.vms['vm-new'] = spare
        await env.index_has('vm-new', lambda e: e[0] == spare.value)
        await fleet.change_each(fleet.names[1:])
        await record_delivered(
            recorder, 'f', fleet, test='test_kube_faults.py::test_f_kube_apiserver_restarted_and_410_gone '
            '(and tests/scenarios/test_kube_index.py::test_410_gone_relists_without_losing_or_keeping_a_vm)',
            did='the watcher is not affected; the VM index and the Zone cache resume their watches with backoff, '
            'get 410 Gone and relist; a VM changed while the API was down and a VirtualMachine created after the '
            'restart are both signalled',
        )  # fmt: skip
        assert env.service.index.stats.relists_gone - gone_before >= 1


async def test_j_crds_missing_at_startup(
    vcsim_factory: Any, tmp_path: Path, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    vc = vcsim_factory(*topology(N))
    server = devenv.KubeServer(state_dir=tmp_path / 'kube-without-crds')
    await asyncio.to_thread(server.start)
    try:
        api = kconfig.new_client_from_config(config_file=str(server.kubeconfig))
        with api:
            async with service_env(api, vc, max_wait_s=2) as env:
                env.service.start_watching()
                await until(lambda: env.service.shard.logins >= 2, 'retried watcher starts')
                assert not env.service.watching
                assert 'CustomResourceDefinition installed?' in env.service.shard.status, env.service.shard.status
                errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
                assert any('CustomResourceDefinition installed?' in m for m in errors), errors
                await asyncio.to_thread(install_crds, api)
                fleet = await make_fleet(env, N)
                await fleet.change_each()
                await record_delivered(
                    recorder, 'j', fleet, test='test_kube_faults.py::test_j_crds_missing_at_startup',
                    did='each watcher start fails at once with an error naming the missing resource and asking '
                    'whether its CRD is installed (logged at error level, rate-limited; not ready); retried with '
                    'backoff; once the CRDs are installed the caches list, the watcher starts and every change is '
                    'signalled',
                )  # fmt: skip
    finally:
        await asyncio.to_thread(server.stop)
