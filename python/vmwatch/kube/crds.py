# SPDX-License-Identifier: Apache-2.0
"""The CustomResourceDefinitions vmwatch reads (Zone, VirtualMachine), shipped with the package."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

__all__ = ['CRD_DIR', 'api_client', 'crd_manifests', 'install_crds', 'install_crds_from_kubeconfig']

CRD_DIR = Path(__file__).with_name('crds')


def crd_manifests() -> list[dict[str, Any]]:
    return [yaml.safe_load(p.read_text()) for p in sorted(CRD_DIR.glob('*.yaml'))]


def install_crds(api: client.ApiClient, *, timeout_s: float = 60.0) -> None:
    """Create or replace the CRDs and wait until the API server serves them (condition Established)."""
    ext: Any = client.ApiextensionsV1Api(api)  # takes plain dicts as bodies, which its stubs do not say
    names = []
    for manifest in crd_manifests():
        name = manifest['metadata']['name']
        names.append(name)
        try:
            ext.create_custom_resource_definition(manifest)
        except ApiException as e:
            if e.status != 409:
                raise
            current = ext.read_custom_resource_definition(name)
            manifest['metadata']['resourceVersion'] = current.metadata.resource_version
            ext.replace_custom_resource_definition(name, manifest)
    deadline = time.monotonic() + timeout_s
    for name in names:
        while True:
            crd = ext.read_custom_resource_definition(name)
            conditions = (crd.status.conditions if crd.status else None) or []
            if any(c.type == 'Established' and c.status == 'True' for c in conditions):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f'CRD {name} not established after {timeout_s} s')
            time.sleep(0.1)


def install_crds_from_kubeconfig(kubeconfig: Path) -> None:
    with api_client(kubeconfig) as api:
        install_crds(api)


def api_client(kubeconfig: Path | None = None) -> client.ApiClient:
    """An ApiClient from a kubeconfig file, else $KUBECONFIG / ~/.kube/config, else the in-cluster config."""
    from kubernetes import config

    loader: Any = config
    if kubeconfig is not None:
        return loader.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-any-return]
    try:
        return loader.new_client_from_config()  # type: ignore[no-any-return]
    except config.ConfigException:
        configuration = client.Configuration()
        loader.load_incluster_config(client_configuration=configuration)
        return client.ApiClient(configuration)
