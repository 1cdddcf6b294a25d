# SPDX-License-Identifier: Apache-2.0
"""The real test servers start, answer, and hold what vmwatch reads (foundation issue, tier 3)."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from pyVim.connect import Disconnect, SmartConnect
from pyVim.task import WaitForTask
from pyVmomi import vim

from vmwatch import devenv
from vmwatch.vsphere import Endpoint, InvalidLoginError, Session

ZONE = {
    'apiVersion': 'topology.tanzu.vmware.com/v1alpha1',
    'kind': 'Zone',
    'metadata': {'name': 'zone-a', 'namespace': 'default'},
    'spec': {
        'availabilityZoneReference': {'apiVersion': 'v1', 'name': 'az-1'},
        'managedVMs': {'folderMoID': 'group-v3'},
    },
}


def _vm_body(name: str) -> dict[str, Any]:
    return {
        'apiVersion': 'vmoperator.vmware.com/v1alpha6',
        'kind': 'VirtualMachine',
        'metadata': {'name': name, 'namespace': 'default'},
        'spec': {'powerState': 'PoweredOn', 'className': 'best-effort-small'},
    }


def test_zone_and_virtualmachine_round_trip(kube_api: client.ApiClient) -> None:
    objs = client.CustomObjectsApi(kube_api)
    objs.create_namespaced_custom_object('topology.tanzu.vmware.com', 'v1alpha1', 'default', 'zones', ZONE)
    zone = objs.get_namespaced_custom_object('topology.tanzu.vmware.com', 'v1alpha1', 'default', 'zones', 'zone-a')
    assert zone['spec']['managedVMs']['folderMoID'] == 'group-v3'

    objs.create_namespaced_custom_object(
        'vmoperator.vmware.com', 'v1alpha6', 'default', 'virtualmachines', _vm_body('vm-1')
    )
    # status is a subresource: a plain patch of status is ignored, the status endpoint sets it
    objs.patch_namespaced_custom_object_status(
        'vmoperator.vmware.com',
        'v1alpha6',
        'default',
        'virtualmachines',
        'vm-1',
        {'status': {'uniqueID': 'vm-42', 'powerState': 'PoweredOff'}},
    )
    vm = objs.get_namespaced_custom_object('vmoperator.vmware.com', 'v1alpha6', 'default', 'virtualmachines', 'vm-1')
    assert vm['status']['uniqueID'] == 'vm-42'
    assert vm['spec']['className'] == 'best-effort-small'  # unknown fields are preserved
    # older served versions read the same object
    old = objs.get_namespaced_custom_object('vmoperator.vmware.com', 'v1alpha1', 'default', 'virtualmachines', 'vm-1')
    assert old['status']['uniqueID'] == 'vm-42'
    # the API server is shared by the session's tests: leave nothing behind
    objs.delete_namespaced_custom_object('topology.tanzu.vmware.com', 'v1alpha1', 'default', 'zones', 'zone-a')
    objs.delete_namespaced_custom_object('vmoperator.vmware.com', 'v1alpha6', 'default', 'virtualmachines', 'vm-1')


def test_extra_config_read_back_with_pyvmomi(vcsim: devenv.VcsimServer) -> None:
    ctx = ssl.create_default_context(cafile=str(vcsim.ca_file))  # TLS verified against vcsim's certificate
    si = SmartConnect(
        host=vcsim.host, port=vcsim.port, user=vcsim.user, pwd=vcsim.password_file.read_text().strip(), sslContext=ctx
    )
    try:
        content = si.RetrieveContent()
        view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
        vms = list(view.view)
        view.DestroyView()
        assert len(vms) == vcsim.vms == 4
        vm = vms[0]
        spec = vim.vm.ConfigSpec(extraConfig=[vim.option.OptionValue(key='vmservice.namespacedName', value='ns/vm-1')])
        WaitForTask(vm.ReconfigVM_Task(spec))
        kept = {o.key: o.value for o in vm.config.extraConfig}
        assert kept['vmservice.namespacedName'] == 'ns/vm-1'
    finally:
        Disconnect(si)
        si._stub.DropConnections()  # Disconnect leaves pyVmomi's pooled socket open


def test_vcsim_rejects_wrong_password(vcsim: devenv.VcsimServer, tmp_path: Path) -> None:
    wrong = tmp_path / 'wrong'
    wrong.write_text('not-the-password\n')
    session = Session(Endpoint(url=vcsim.url, user=vcsim.user, password_file=wrong, ca_file=vcsim.ca_file))
    with pytest.raises(InvalidLoginError):
        session.login()
