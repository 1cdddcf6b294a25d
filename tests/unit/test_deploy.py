# SPDX-License-Identifier: Apache-2.0
"""The kustomize base carries every setting, as the code reads it, and the example overlay stays valid.

(The manifests are applied to a real kube-apiserver with server-side dry-run in tests/scenarios/test_ship.py.)
"""

from __future__ import annotations

import argparse
import re
import tomllib
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from vmwatch import docs_gen
from vmwatch.settings import ServiceSettings, SettingsError, async_signal_disabled, env_name, load_service_settings

DEPLOY = Path(__file__).resolve().parents[2] / 'deploy'
BASE = DEPLOY / 'base'
EXAMPLE = DEPLOY / 'overlays' / 'example'
NO_FLAGS = argparse.Namespace()


def _load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _configmap() -> dict[str, Any]:
    (cm,) = _load(BASE / 'configmap.yaml')
    return cm


def _deployment() -> dict[str, Any]:
    (deployment,) = _load(BASE / 'deployment.yaml')
    return deployment


def test_configmap_is_generated_from_the_settings() -> None:
    assert (BASE / 'configmap.yaml').read_text() == docs_gen.configmap_yaml(), 'run: python -m vmwatch.docs_gen docs'


def test_configmap_has_a_key_for_every_setting_and_the_feature_switch() -> None:
    data = _configmap()['data']
    expected = {env_name(f.name) for f in fields(ServiceSettings)} | {'ASYNC_SIGNAL_ENABLED'}
    assert set(data) == expected
    assert all(isinstance(v, str) for v in data.values())  # ConfigMap data must be strings


def test_configmap_values_read_back_as_the_defaults_except_the_deployment_values() -> None:
    data = _configmap()['data']
    settings = load_service_settings(NO_FLAGS, environ=data)
    overridden = load_service_settings(NO_FLAGS, environ={
        env_name(name): value for name, value in docs_gen.DEPLOYMENT_VALUES.items()
    })  # fmt: skip
    assert settings == overridden
    assert replace(settings, **{name: getattr(ServiceSettings(), name) for name in docs_gen.DEPLOYMENT_VALUES}) == (
        ServiceSettings()
    )
    assert settings.validate() is settings
    assert settings.sink == 'annotate' and settings.vc_password_file == Path('/etc/vmwatch/vcenter/password')
    assert not async_signal_disabled(data)


def test_deployment_reads_every_setting_from_the_configmap() -> None:
    pod = _deployment()['spec']['template']['spec']
    (container,) = pod['containers']
    assert container['envFrom'] == [{'configMapRef': {'name': _configmap()['metadata']['name']}}]
    assert [e['name'] for e in container['env']] == ['VMWATCH_LEASE_NAMESPACE']
    mounts = {m['mountPath'] for m in container['volumeMounts']}
    for name in ('vc_user_file', 'vc_password_file', 'vc_ca_file'):
        assert str(Path(docs_gen.DEPLOYMENT_VALUES[name]).parent) in mounts
    port = int(_configmap()['data']['VMWATCH_HEALTH_PROBE_BIND_ADDRESS'].rsplit(':', 1)[1])
    assert [p['containerPort'] for p in container['ports']] == [port]


def test_empty_variables_are_unset_and_bad_values_still_fail() -> None:
    assert load_service_settings(NO_FLAGS, environ={'VMWATCH_WORKERS': '', 'VMWATCH_VC_INSECURE': ''}) == (
        ServiceSettings()
    )
    with pytest.raises(SettingsError, match='VMWATCH_WORKERS'):
        load_service_settings(NO_FLAGS, environ={'VMWATCH_WORKERS': 'eight'})


def test_example_overlay_patches_known_settings_and_stays_valid() -> None:
    kustomization = yaml.safe_load((EXAMPLE / 'kustomization.yaml').read_text())
    assert [(EXAMPLE / r).resolve() for r in kustomization['resources']] == [BASE.resolve()]
    (image,) = kustomization['images']
    (container,) = _deployment()['spec']['template']['spec']['containers']
    assert container['image'].split(':')[0] == image['name']  # the image rename reaches the Deployment
    base = _configmap()
    merged = dict(base['data'])
    for patch in kustomization['patches']:
        (doc,) = _load(EXAMPLE / patch['path'])
        assert (doc['kind'], doc['metadata']) == (base['kind'], base['metadata'])  # patches the ConfigMap
        assert set(doc['data']) <= set(base['data']), 'the overlay names a setting that does not exist'
        merged.update(doc['data'])  # strategic merge of a ConfigMap's data: key by key
    settings = load_service_settings(NO_FLAGS, environ=merged).validate()
    assert settings.workers == 8 and settings.vc_url.startswith('https://vcenter.corp.')
    assert 'tools.heartbeat' in settings.filter_settings().all_ignored_keys()


def test_three_vcenters_overlay_configures_three_shards_with_their_secrets_mounted() -> None:
    overlay = DEPLOY / 'overlays' / 'three-vcenters'
    kustomization = yaml.safe_load((overlay / 'kustomization.yaml').read_text())
    assert [(overlay / r).resolve() for r in kustomization['resources']] == [BASE.resolve()]
    (generated,) = kustomization['configMapGenerator']
    merged = dict(_configmap()['data'])
    (settings_patch,) = _load(overlay / 'settings.yaml')
    assert set(settings_patch['data']) <= set(merged), 'the overlay names a setting that does not exist'
    merged.update(settings_patch['data'])
    settings = load_service_settings(NO_FLAGS, environ=merged).validate()
    mount_dir = str(settings.vcenters_file).rsplit('/', 1)[0]
    assert generated['files'] == [Path(str(settings.vcenters_file)).name]
    local = replace(settings, vcenters_file=overlay / generated['files'][0])  # the file the ConfigMap carries
    vcenters = local.vcenters()
    assert [vc.name for vc in vcenters] == ['site-a', 'site-b', 'site-c']
    assert [local.shard_lease_name(vc.name) for vc in vcenters] == [
        'vmwatch-site-a',
        'vmwatch-site-b',
        'vmwatch-site-c',
    ]
    (deployment_patch,) = _load(overlay / 'deployment.yaml')
    assert deployment_patch['spec']['replicas'] == 3
    pod = deployment_patch['spec']['template']['spec']
    (container,) = pod['containers']
    mounts = {m['mountPath']: m['name'] for m in container['volumeMounts'] if 'mountPath' in m}
    volumes = {v['name']: v for v in pod['volumes']}
    assert {'name': 'vcenter', '$patch': 'delete'} in pod['volumes']  # the base's one Secret is not mounted
    assert volumes[mounts[mount_dir]]['configMap']['name'] == generated['name']
    for vc in vcenters:  # every credentials file lies in a mounted Secret
        for path in (vc.user_file, vc.password_file, vc.ca_file):
            assert path is not None and 'secret' in volumes[mounts[str(path.parent)]], (vc.name, path)


def test_dockerfile_copies_what_exists_and_matches_the_deployment() -> None:
    """No engine here builds the image (hadolint runs in `make lint`): check what the tree can check."""
    root = DEPLOY.parent
    text = (root / 'Dockerfile').read_text()
    sources = [src for line in text.splitlines() if line.startswith('COPY ') and '--from=' not in line
               for src in line.split()[1:-1]]  # fmt: skip
    assert sources, 'no COPY lines'
    for src in sources:
        assert (root / src).exists(), f'the Dockerfile copies {src}, which does not exist'
    pod = _deployment()['spec']['template']['spec']
    user = re.search(r'^USER (\d+):(\d+)$', text, re.M)
    assert user and int(user.group(1)) == pod['securityContext']['runAsUser']
    port = int(_configmap()['data']['VMWATCH_HEALTH_PROBE_BIND_ADDRESS'].rsplit(':', 1)[1])
    assert re.search(rf'^EXPOSE {port}$', text, re.M)
    (container,) = pod['containers']
    assert re.search(r'^ENTRYPOINT \["vmwatch"\]$', text, re.M) and container['args'] == ['run']
    rust = re.search(r'^FROM rust:(\d+\.\d+)', text, re.M)
    toolchain = tomllib.loads((root / 'Cargo.toml').read_text())['package'].get('rust-version')
    assert rust and (
        toolchain is None or tuple(map(int, rust.group(1).split('.'))) >= tuple(map(int, toolchain.split('.')[:2]))
    )
