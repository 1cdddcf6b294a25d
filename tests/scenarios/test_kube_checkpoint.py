# SPDX-License-Identifier: Apache-2.0
"""The checkpoint ConfigMaps against the real kube-apiserver: parts, generations, a half-written checkpoint."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from vmwatch.kube.checkpoint import LABEL, PART_BYTES, CheckpointStore


@pytest.fixture
def namespace(kube_api: client.ApiClient) -> Iterator[str]:
    ns = 'ckpt-' + uuid.uuid4().hex[:8]
    core = client.CoreV1Api(kube_api)
    core.create_namespace({'metadata': {'name': ns}})
    yield ns
    core.delete_namespace(ns)


def records(n: int) -> bytes:
    return os.urandom(16 * n)


def configmaps(api: Any, ns: str) -> dict[str, Any]:
    items = client.CoreV1Api(api).list_namespaced_config_map(ns, label_selector=f'{LABEL}=vmwatch').items
    return {cm.metadata.name: cm for cm in items}


def test_round_trip_in_parts_alternating_slots(kube_api: client.ApiClient, namespace: str) -> None:
    store = CheckpointStore(kube_api, namespace=namespace, lease_name='vmwatch', part_bytes=16 * 100)
    assert store.load() is None
    first = records(250)  # 3 parts
    assert store.save(first) == 1
    assert sorted(configmaps(kube_api, namespace)) == [f'vmwatch-checkpoint-1-{i}' for i in range(3)]
    second = records(120)  # 2 parts, in the other slot: generation 1 stays whole meanwhile
    assert store.save(second) == 2
    assert len(configmaps(kube_api, namespace)) == 5
    third = records(10)  # slot 1 again: its third part, left from generation 1, is deleted
    assert store.save(third) == 3
    names = sorted(configmaps(kube_api, namespace))
    assert names == ['vmwatch-checkpoint-0-0', 'vmwatch-checkpoint-0-1', 'vmwatch-checkpoint-1-0'], names
    reader = CheckpointStore(kube_api, namespace=namespace, lease_name='vmwatch')  # a new holder
    assert reader.load() == third
    assert reader.save(b'') == 4  # it continues the generations it found
    assert CheckpointStore(kube_api, namespace=namespace, lease_name='vmwatch').load() == b''
    cm = configmaps(kube_api, namespace)['vmwatch-checkpoint-0-0']
    assert {m.manager for m in cm.metadata.managed_fields} == {'vmwatch'}


def test_a_half_written_or_damaged_generation_falls_back_to_the_previous_one(
    kube_api: client.ApiClient, namespace: str
) -> None:
    store = CheckpointStore(kube_api, namespace=namespace, lease_name='vmwatch', part_bytes=16 * 100)
    good = records(150)
    store.save(good)
    store.save(records(150))
    core = client.CoreV1Api(kube_api)
    core.delete_namespaced_config_map('vmwatch-checkpoint-0-1', namespace)  # the writer died after part 0
    assert CheckpointStore(kube_api, namespace=namespace, lease_name='vmwatch').load() == good
    store.save(records(150))  # generation 3 in slot 1 replaces `good`
    cm = core.read_namespaced_config_map('vmwatch-checkpoint-1-1', namespace)
    cm.binary_data['records'] = cm.binary_data['records'][:-8] + 'AAAAAAA='  # bytes no longer match the hash
    core.replace_namespaced_config_map('vmwatch-checkpoint-1-1', namespace, cm)
    assert CheckpointStore(kube_api, namespace=namespace, lease_name='vmwatch').load() is None  # nothing whole


def test_a_part_stays_under_the_object_size_limit() -> None:
    assert PART_BYTES % 16 == 0
    assert PART_BYTES * 4 / 3 <= 900 * 1024  # base64 in etcd
