# SPDX-License-Identifier: Apache-2.0
"""Inventory calls outside the watcher: which containers still exist (the service), and the few
operations the demo, the benchmarks and the tests perform on VMs."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from vmwatch.vsphere._pyvmomi import PC, vim
from vmwatch.vsphere.errors import NotAuthenticatedError, VsphereFault
from vmwatch.vsphere.refs import MoRef
from vmwatch.vsphere.session import Session

__all__ = [
    'create_folder',
    'destroy',
    'existing',
    'move_into',
    'power_on',
    'set_extra_config',
    'vm_folder',
    'vms_under',
]


def existing(session: Session, refs: Iterable[MoRef]) -> set[MoRef]:
    """The subset of `refs` that exist in vCenter, in one RetrievePropertiesEx (spec 4.3 step 4).

    Asks for no properties with reportMissingObjectsInResults: vCenter leaves missing objects out of
    the result instead of failing the call, so one stale Zone folder cannot stop the watcher.
    """
    wanted = sorted(set(refs))
    if not wanted:
        return set()
    objs = [session.managed_object(ref) for ref in wanted]
    spec = PC.FilterSpec(
        objectSet=[PC.ObjectSpec(obj=o, skip=False) for o in objs],
        propSet=[PC.PropertySpec(type=t, all=False, pathSet=[]) for t in {type(o) for o in objs}],
        reportMissingObjectsInResults=True,
    )
    pc = session.content.propertyCollector
    found: set[MoRef] = set()
    result = session.call('RetrievePropertiesEx(folders)', pc.RetrievePropertiesEx, [spec], PC.RetrieveOptions())
    while result is not None:
        for oc in result.objects or ():
            if any(getattr(type(m.fault), '_wsdlName', '') == 'NotAuthenticated' for m in oc.missingSet or ()):
                raise NotAuthenticatedError('RetrievePropertiesEx(folders): the vCenter session is not authenticated')
            found.add(MoRef(oc.obj._wsdlName, str(oc.obj._moId)))
        token = result.token
        result = session.call('ContinueRetrievePropertiesEx', pc.ContinueRetrievePropertiesEx, token) if token else None
    return found & set(wanted)


def vms_under(session: Session, container: MoRef) -> list[tuple[MoRef, str]]:
    """(ref, name) of every VM below `container` (recursive), sorted by name."""
    content = session.content
    view = session.call(
        'CreateContainerView',
        content.viewManager.CreateContainerView,
        session.managed_object(container),
        [vim.VirtualMachine],
        True,
    )
    try:
        return sorted(((MoRef('VirtualMachine', str(vm._moId)), str(vm.name)) for vm in view.view), key=lambda x: x[1])
    finally:
        session.call('DestroyView', view.DestroyView)


def vm_folder(session: Session, datacenter_index: int = 0) -> MoRef:
    """The root VM folder of the n-th datacenter (where new VMs go by default)."""
    dcs = [e for e in session.content.rootFolder.childEntity if isinstance(e, vim.Datacenter)]
    return MoRef('Folder', str(dcs[datacenter_index].vmFolder._moId))


def _wait(session: Session, task: Any, what: str) -> None:
    while task.info.state in ('queued', 'running'):
        time.sleep(0.05)
    if task.info.state != 'success':
        raise VsphereFault(getattr(type(task.info.error), '_wsdlName', 'Fault'), str(task.info.error.msg), call=what)


def set_extra_config(session: Session, vm: MoRef, values: dict[str, str]) -> None:
    """Reconfigure the VM's extraConfig (an empty value removes the key)."""
    spec = vim.vm.ConfigSpec(extraConfig=[vim.option.OptionValue(key=k, value=v) for k, v in values.items()])
    task = session.call('ReconfigVM_Task', session.managed_object(vm).ReconfigVM_Task, spec)
    _wait(session, task, 'ReconfigVM_Task')


def power_on(session: Session, vm: MoRef) -> None:
    task = session.call('PowerOnVM_Task', session.managed_object(vm).PowerOnVM_Task)
    _wait(session, task, 'PowerOnVM_Task')


def create_folder(session: Session, parent: MoRef, name: str) -> MoRef:
    folder = session.call('CreateFolder', session.managed_object(parent).CreateFolder, name)
    return MoRef('Folder', str(folder._moId))


def move_into(session: Session, folder: MoRef, vms: Iterable[MoRef]) -> None:
    """MoveIntoFolder_Task: the VMs enter the views that cover `folder`."""
    objs = [session.managed_object(vm) for vm in vms]
    task = session.call('MoveIntoFolder_Task', session.managed_object(folder).MoveIntoFolder_Task, objs)
    _wait(session, task, 'MoveIntoFolder_Task')


def destroy(session: Session, vm: MoRef) -> None:
    task = session.call('Destroy_Task', session.managed_object(vm).Destroy_Task)
    _wait(session, task, 'Destroy_Task')
