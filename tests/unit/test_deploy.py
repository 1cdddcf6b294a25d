# SPDX-License-Identifier: Apache-2.0
"""The kustomize base carries every setting, as the code reads it, and the overlays stay valid; the manifests are
what a platform team expects (PodDisruptionBudget, spread, a metrics Service, a generated ConfigMap, a tagged image).

No kustomize binary is here: tests/scenarios/kustomize_lite.py renders what deploy/ uses. (The manifests are applied
to a real kube-apiserver with server-side dry-run in tests/scenarios/test_ship.py.)
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tomllib
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from vmwatch import docs_gen
from vmwatch.settings import ServiceSettings, SettingsError, async_signal_disabled, env_name, load_service_settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'scenarios'))  # kustomize_lite, shared with test_ship
from kustomize_lite import build, parse_env_file

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / 'deploy'
BASE = DEPLOY / 'base'
EXAMPLE = DEPLOY / 'overlays' / 'example'
NO_FLAGS = argparse.Namespace()


def _load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _kind(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d['kind'] == kind]
    return doc


def _configmap(directory: Path = BASE) -> dict[str, Any]:
    """The generated settings ConfigMap, as `kustomize build directory` makes it."""
    docs = build(directory)
    (cm,) = [d for d in docs if d['kind'] == 'ConfigMap' and d['metadata']['name'].startswith('vmwatch-')
             and 'VMWATCH_SINK' in d['data']]  # fmt: skip
    return cm


def _deployment(directory: Path = BASE) -> dict[str, Any]:
    return _kind(build(directory), 'Deployment')


def test_settings_env_is_generated_from_the_settings() -> None:
    assert (BASE / 'settings.env').read_text() == docs_gen.settings_env(), 'run: python -m vmwatch.docs_gen docs'
    assert parse_env_file(docs_gen.settings_env()) == _configmap()['data']


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
    assert container['envFrom'] == [{'configMapRef': {'name': _configmap()['metadata']['name']}}]  # renamed
    assert [e['name'] for e in container['env']] == ['VMWATCH_LEASE_NAMESPACE']
    mounts = {m['mountPath'] for m in container['volumeMounts']}
    for name in ('vc_user_file', 'vc_password_file', 'vc_ca_file'):
        assert str(Path(docs_gen.DEPLOYMENT_VALUES[name]).parent) in mounts
    data = _configmap()['data']
    ports = {p['name']: p['containerPort'] for p in container['ports']}
    assert ports == {'health': int(data['VMWATCH_HEALTH_PROBE_BIND_ADDRESS'].rsplit(':', 1)[1]),
                     'metrics': int(data['VMWATCH_METRICS_BIND_ADDRESS'].rsplit(':', 1)[1])}  # fmt: skip
    for probe, path in (('readinessProbe', '/readyz'), ('livenessProbe', '/healthz')):
        assert container[probe]['httpGet'] == {'path': path, 'port': 'health'}
    liveness = container['livenessProbe']
    stall_s = load_service_settings(NO_FLAGS, environ=data).liveness_stall_s
    # the kubelet restarts a stuck process: a few failed probes after the stall bound, not before it
    assert liveness['periodSeconds'] * liveness['failureThreshold'] <= stall_s + 60


def test_empty_variables_are_unset_and_bad_values_still_fail() -> None:
    assert load_service_settings(NO_FLAGS, environ={'VMWATCH_WORKERS': '', 'VMWATCH_VC_INSECURE': ''}) == (
        ServiceSettings()
    )
    with pytest.raises(SettingsError, match='VMWATCH_WORKERS'):
        load_service_settings(NO_FLAGS, environ={'VMWATCH_WORKERS': 'eight'})


def test_example_overlay_merges_known_settings_and_stays_valid() -> None:
    kustomization = yaml.safe_load((EXAMPLE / 'kustomization.yaml').read_text())
    assert [(EXAMPLE / r).resolve() for r in kustomization['resources']] == [BASE.resolve()]
    (generator,) = kustomization['configMapGenerator']
    assert (generator['name'], generator['behavior']) == ('vmwatch', 'merge')
    changed = parse_env_file((EXAMPLE / generator['envs'][0]).read_text())
    assert set(changed) <= set(_configmap()['data']), 'the overlay names a setting that does not exist'
    merged = _configmap(EXAMPLE)
    assert merged['data'] == {**_configmap()['data'], **changed}
    settings = load_service_settings(NO_FLAGS, environ=merged['data']).validate()
    assert settings.workers == 8 and settings.vc_url.startswith('https://vcenter.corp.')
    assert 'tools.heartbeat' in settings.filter_settings().all_ignored_keys()
    (container,) = _deployment(EXAMPLE)['spec']['template']['spec']['containers']
    assert container['image'] == 'registry.example.com/platform/vmwatch:0.1.0'  # the overlay's images: entry
    assert container['envFrom'] == [{'configMapRef': {'name': merged['metadata']['name']}}]


def test_three_vcenters_overlay_configures_three_shards_with_their_secrets_mounted() -> None:
    overlay = DEPLOY / 'overlays' / 'three-vcenters'
    kustomization = yaml.safe_load((overlay / 'kustomization.yaml').read_text())
    assert [(overlay / r).resolve() for r in kustomization['resources']] == [BASE.resolve()]
    generated, settings_generator = kustomization['configMapGenerator']
    assert (settings_generator['name'], settings_generator['behavior']) == ('vmwatch', 'merge')
    merged = dict(_configmap()['data'])
    changed = parse_env_file((overlay / settings_generator['envs'][0]).read_text())
    assert set(changed) <= set(merged), 'the overlay names a setting that does not exist'
    merged.update(changed)
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
    assert int(user.group(2)) == pod['securityContext']['runAsGroup']
    exposed = {int(p) for line in re.findall(r'^EXPOSE (.+)$', text, re.M) for p in line.split()}
    for setting in ('VMWATCH_HEALTH_PROBE_BIND_ADDRESS', 'VMWATCH_METRICS_BIND_ADDRESS'):  # probes and /metrics
        assert int(_configmap()['data'][setting].rsplit(':', 1)[1]) in exposed, setting
    (container,) = pod['containers']
    assert re.search(r'^ENTRYPOINT \["vmwatch"\]$', text, re.M) and container['args'] == ['run']
    rust = re.search(r'^FROM rust:(\d+\.\d+)', text, re.M)
    toolchain = tomllib.loads((root / 'Cargo.toml').read_text())['package'].get('rust-version')
    assert rust and (
        toolchain is None or tuple(map(int, rust.group(1).split('.'))) >= tuple(map(int, toolchain.split('.')[:2]))
    )


def _cargo_version() -> str:
    return str(tomllib.loads((ROOT / 'Cargo.toml').read_text())['package']['version'])


def test_the_image_is_a_release_tag_an_overlay_replaces_never_latest() -> None:
    (container,) = _deployment()['spec']['template']['spec']['containers']
    assert container['image'] == f'vmwatch:{_cargo_version()}'
    (raw,) = _load(BASE / 'deployment.yaml')  # also when the file is applied without kustomize
    assert raw['spec']['template']['spec']['containers'][0]['image'] == container['image']
    for overlay in sorted((DEPLOY / 'overlays').iterdir()):
        kustomization = yaml.safe_load((overlay / 'kustomization.yaml').read_text())
        for image in kustomization.get('images', []):
            assert image['name'] == 'vmwatch' and image.get('newTag', image.get('digest')), overlay.name
            assert image.get('newTag') != 'latest', overlay.name
    for path in DEPLOY.rglob('*.yaml'):
        assert ':latest' not in path.read_text() and 'newTag: latest' not in path.read_text(), path


def test_a_changed_setting_renames_the_configmap_and_so_rolls_the_pods(tmp_path: Path) -> None:
    before = _deployment()['spec']['template']
    copy = tmp_path / 'base'
    shutil.copytree(BASE, copy)
    env = copy / 'settings.env'
    env.write_text(env.read_text().replace('VMWATCH_WORKERS=4\n', 'VMWATCH_WORKERS=5\n'))
    after = _deployment(copy)['spec']['template']
    old, new = (t['spec']['containers'][0]['envFrom'][0]['configMapRef']['name'] for t in (before, after))
    assert old != new and old.startswith('vmwatch-') and new.startswith('vmwatch-')  # a new pod template
    kustomization = yaml.safe_load((BASE / 'kustomization.yaml').read_text())
    assert 'generatorOptions' not in kustomization  # no disableNameSuffixHash: kustomize renames as above
    assert not (BASE / 'configmap.yaml').exists()


def test_a_disruption_budget_and_spread_across_nodes() -> None:
    docs = build(BASE)
    deployment = _kind(docs, 'Deployment')
    labels = deployment['spec']['template']['metadata']['labels']
    pdb = _kind(docs, 'PodDisruptionBudget')
    assert pdb['apiVersion'] == 'policy/v1' and pdb['metadata']['namespace'] == deployment['metadata']['namespace']
    assert pdb['spec']['selector']['matchLabels'].items() <= labels.items()
    assert pdb['spec'] == {'maxUnavailable': 1, 'selector': pdb['spec']['selector']}
    assert deployment['spec']['replicas'] >= 2  # with one replica, a budget of 1 unavailable protects nothing
    (spread,) = deployment['spec']['template']['spec']['topologySpreadConstraints']
    assert spread['topologyKey'] == 'kubernetes.io/hostname' and spread['maxSkew'] == 1
    assert spread['labelSelector']['matchLabels'].items() <= labels.items()
    security = deployment['spec']['template']['spec']['securityContext']
    assert security['runAsNonRoot'] and security['runAsUser'] == security['runAsGroup'] == 10001


def test_a_metrics_service_and_the_servicemonitor_overlay() -> None:
    docs = build(BASE)
    deployment = _kind(docs, 'Deployment')
    (container,) = deployment['spec']['template']['spec']['containers']
    service = _kind(docs, 'Service')
    (port,) = service['spec']['ports']
    assert port['port'] == 8080 and port['targetPort'] == 'metrics'
    assert {p['name']: p['containerPort'] for p in container['ports']}['metrics'] == 8080
    assert service['spec']['selector'].items() <= deployment['spec']['template']['metadata']['labels'].items()
    overlay = DEPLOY / 'overlays' / 'servicemonitor'
    rendered = build(overlay)
    monitor = _kind(rendered, 'ServiceMonitor')
    assert monitor['apiVersion'] == 'monitoring.coreos.com/v1'
    assert monitor['spec']['selector']['matchLabels'].items() <= service['metadata']['labels'].items()
    assert monitor['spec']['namespaceSelector']['matchNames'] == [service['metadata']['namespace']]
    (endpoint,) = monitor['spec']['endpoints']
    assert endpoint['port'] == port['name'] and endpoint['path'] == '/metrics'
    assert [d['kind'] for d in rendered if d['kind'] != 'ServiceMonitor'] == [d['kind'] for d in docs]
