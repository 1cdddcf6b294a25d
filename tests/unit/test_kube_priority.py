# SPDX-License-Identifier: Apache-2.0
"""spec.md 6.7 (scenarios 49-57): the reconcile priority of a VirtualMachine, from its raw JSON."""

from __future__ import annotations

from typing import Any

import pytest

from vmwatch.kube.priority import (
    LOW_PRIORITY,
    PRIORITY_ANNOTATION,
    PRIORITY_CREATING,
    PRIORITY_DELETING,
    PRIORITY_GENERIC,
    PRIORITY_POWER_STATE_CHANGE,
    PRIORITY_WAITING_FOR_DISK_PROMO,
    PRIORITY_WAITING_FOR_IP,
    event_priority,
    vm_priority,
)

DEFAULT = 7  # a distinctive event default, so "default" results cannot be confused with a bucket


def cond(kind: str, status: str) -> dict[str, str]:
    return {'type': kind, 'status': status}


def vm(
    *,
    created: str | None = 'True',
    promo_synced: str | None = 'True',
    spec_power: str = 'PoweredOff',
    status_power: str = 'PoweredOff',
    network_spec: dict[str, Any] | None = None,
    network_status: dict[str, Any] | None = None,
    promote: str | None = 'Disabled',
    annotations: dict[str, str] | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    """A VirtualMachine that is stable (default priority) unless a keyword says otherwise."""
    conditions = []
    if created is not None:
        conditions.append(cond('VirtualMachineCreated', created))
    if promo_synced is not None:
        conditions.append(cond('VirtualMachineDiskPromotionSynced', promo_synced))
    obj: dict[str, Any] = {
        'apiVersion': 'vmoperator.vmware.com/v1alpha6',
        'kind': 'VirtualMachine',
        'metadata': {'namespace': 'ns', 'name': 'vm'},
        'spec': {'powerState': spec_power},
        'status': {'powerState': status_power, 'conditions': conditions},
    }
    if annotations is not None:
        obj['metadata']['annotations'] = annotations
    if deleting:
        obj['metadata']['deletionTimestamp'] = '2026-01-01T00:00:00Z'
    if network_spec is not None:
        obj['spec']['network'] = network_spec
    if network_status is not None:
        obj['status']['network'] = network_status
    if promote is not None:
        obj['spec']['promoteDisksMode'] = promote
    return obj


def prio(obj: dict[str, Any] | None) -> int:
    return vm_priority(obj, default=DEFAULT)


def test_stable_vm_gets_the_default() -> None:
    assert prio(vm()) == DEFAULT
    assert vm_priority(vm()) == PRIORITY_GENERIC  # async signals are Generic events


# 49
@pytest.mark.parametrize('value, expected', [('42', 42), ('-5', -5), ('+3', 3), ('0', 0)])
def test_49_annotation_with_valid_int_wins(value: str, expected: int) -> None:
    assert prio(vm(annotations={PRIORITY_ANNOTATION: value}, created='False', deleting=True)) == expected


@pytest.mark.parametrize('value', ['', 'abc', '4.2', ' 42', '4_2', '99999999999999999999'])
def test_49_annotation_invalid_or_empty_is_ignored(value: str) -> None:
    assert prio(vm(annotations={PRIORITY_ANNOTATION: value})) == DEFAULT
    assert prio(vm(annotations={PRIORITY_ANNOTATION: value}, deleting=True)) == PRIORITY_DELETING


# 50
@pytest.mark.parametrize('annotations', [None, {}, {'foo': 'bar'}])
def test_50_non_vm_object_gets_the_default(annotations: dict[str, str] | None) -> None:
    pod: dict[str, Any] = {'apiVersion': 'v1', 'kind': 'Pod', 'metadata': {'deletionTimestamp': 'x'}}
    if annotations is not None:
        pod['metadata']['annotations'] = annotations
    assert prio(pod) == DEFAULT
    assert prio(None) == DEFAULT
    assert prio({}) == DEFAULT


# 51
def test_51_deleting_even_if_not_created() -> None:
    assert prio(vm(deleting=True)) == PRIORITY_DELETING == 97
    assert prio(vm(deleting=True, created=None)) == PRIORITY_DELETING
    assert prio(vm(deleting=True, created='False', spec_power='PoweredOn')) == PRIORITY_DELETING


# 52
@pytest.mark.parametrize('created', ['False', None, 'Unknown'])
def test_52_not_created(created: str | None) -> None:
    assert prio(vm(created=created, spec_power='PoweredOn')) == PRIORITY_CREATING == 100


# 53
@pytest.mark.parametrize(
    'spec_power, status_power',
    [('PoweredOn', 'PoweredOff'), ('PoweredOff', 'PoweredOn'), ('Suspended', 'PoweredOn'), ('PoweredOn', '')],
)
def test_53_power_state_mismatch(spec_power: str, status_power: str) -> None:
    assert prio(vm(spec_power=spec_power, status_power=status_power)) == PRIORITY_POWER_STATE_CHANGE == 99
    # precedence over waiting-for-IP
    assert prio(vm(spec_power=spec_power, status_power=status_power, network_spec={})) == PRIORITY_POWER_STATE_CHANGE


def powered_on(**kwargs: Any) -> dict[str, Any]:
    return vm(spec_power='PoweredOn', status_power='PoweredOn', **kwargs)


# 54
@pytest.mark.parametrize('network_status', [None, {}, {'primaryIP4': '', 'primaryIP6': ''}])
def test_54_waiting_for_ip(network_status: dict[str, str] | None) -> None:
    assert prio(powered_on(network_spec={}, network_status=network_status)) == PRIORITY_WAITING_FOR_IP == 98
    assert prio(powered_on(network_spec={'disabled': False}, network_status=network_status)) == PRIORITY_WAITING_FOR_IP


@pytest.mark.parametrize(
    'network_spec, network_status',
    [
        ({}, {'primaryIP4': '10.0.0.2'}),
        ({}, {'primaryIP6': 'fd00::2'}),
        ({'disabled': True}, None),
        (None, None),
    ],
)
def test_54_not_waiting_for_ip(network_spec: dict[str, Any] | None, network_status: dict[str, str] | None) -> None:
    assert prio(powered_on(network_spec=network_spec, network_status=network_status)) == DEFAULT


# 55
def test_55_powered_off() -> None:
    assert prio(vm(promote='Disabled', promo_synced=None)) == DEFAULT
    assert prio(vm(promote='Online', promo_synced='False')) == PRIORITY_WAITING_FOR_DISK_PROMO == 96


# 56
@pytest.mark.parametrize('promote', ['Online', 'Offline', '', None])
@pytest.mark.parametrize('synced', ['False', 'Unknown', None])
def test_56_disk_promotion_pending(promote: str | None, synced: str | None) -> None:
    assert prio(vm(promote=promote, promo_synced=synced)) == PRIORITY_WAITING_FOR_DISK_PROMO


@pytest.mark.parametrize(
    'promote, synced', [('Disabled', 'False'), ('Disabled', None), ('Online', 'True'), ('', 'True')]
)
def test_56_disk_promotion_not_pending(promote: str, synced: str | None) -> None:
    assert prio(vm(promote=promote, promo_synced=synced)) == DEFAULT


# 57: the reference's quirk (spec.md 7.2 #12), kept because the decisions say to use the code table
def test_57_powered_on_with_ip_and_promo_pending_gets_the_default() -> None:
    obj = powered_on(network_spec={}, network_status={'primaryIP4': '10.0.0.2'}, promote='Online', promo_synced='False')
    assert prio(obj) == DEFAULT
    assert prio(powered_on(promote='Online', promo_synced='False')) == DEFAULT


def test_event_defaults() -> None:
    assert [event_priority(k) for k in ('generic', 'update', 'delete', 'create')] == [1, 2, 3, 4]
    assert event_priority('create', initial_list=True) == LOW_PRIORITY == -100
    assert event_priority('update', same_resource_version=True) == LOW_PRIORITY
    assert event_priority('delete', initial_list=True, same_resource_version=True) == 3
