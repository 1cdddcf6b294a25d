# SPDX-License-Identifier: Apache-2.0
"""The part of `kustomize build` deploy/ uses, in Python (no kustomize binary here): resources, configMapGenerator
(envs, files, literals; behavior create or merge; the content-hash name suffix and the references it renames)
and images. Anything else in a kustomization is refused rather than skipped, so a test never checks less than
it thinks. The suffix is a content hash like kustomize's, not byte-identical to it."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

__all__ = ['SUPPORTED', 'build', 'parse_env_file']

SUPPORTED = frozenset({'apiVersion', 'kind', 'resources', 'configMapGenerator', 'images'})


def parse_env_file(text: str) -> dict[str, str]:
    """KEY=VALUE lines as kustomize reads an `envs` file: blank lines and `#` comments skipped, the value taken
    as written after the first `=` (no quote removal)."""
    data = {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith('#'):
            continue
        key, sep, value = stripped.partition('=')
        if not sep:
            raise ValueError(f'not KEY=VALUE: {line!r}')
        data[key] = value
    return data


def _generated_data(directory: Path, gen: dict[str, Any]) -> dict[str, str]:
    data: dict[str, str] = {}
    for env in gen.get('envs', []):
        data.update(parse_env_file((directory / env).read_text()))
    for f in gen.get('files', []):
        key, _, path = f.rpartition('=')
        data[key or Path(path).name] = (directory / path).read_text()
    for literal in gen.get('literals', []):
        key, _, value = literal.partition('=')
        data[key] = value
    return data


def _build(directory: Path) -> tuple[list[dict[str, Any]], dict[tuple[str, str], dict[str, Any]]]:
    kustomization = yaml.safe_load((directory / 'kustomization.yaml').read_text())
    unsupported = set(kustomization) - SUPPORTED
    if unsupported:
        raise NotImplementedError(f'{directory}: kustomize_lite does not render {sorted(unsupported)}')
    docs: list[dict[str, Any]] = []
    generated: dict[tuple[str, str], dict[str, Any]] = {}
    for resource in kustomization.get('resources', []):
        path = directory / resource
        if path.is_dir():
            sub_docs, sub_generated = _build(path)
            docs.extend(sub_docs)
            generated.update(sub_generated)
        else:
            docs.extend(copy.deepcopy(d) for d in yaml.safe_load_all(path.read_text()) if d)
    for gen in kustomization.get('configMapGenerator', []):
        key = (gen.get('namespace', ''), gen['name'])
        data = _generated_data(directory, gen)
        behavior = gen.get('behavior', 'create')
        if behavior == 'create':
            if key in generated:
                raise ValueError(f'{key} generated twice')
            cm = {'apiVersion': 'v1', 'kind': 'ConfigMap', 'metadata': {'name': gen['name']}, 'data': data}
            if key[0]:
                cm['metadata']['namespace'] = key[0]
            generated[key] = cm
            docs.append(cm)
        elif behavior in ('merge', 'replace'):
            if key not in generated:
                raise ValueError(f'{key}: nothing to {behavior} (no generator of that name in the resources)')
            target = generated[key]
            target['data'] = {**target['data'], **data} if behavior == 'merge' else data
        else:
            raise ValueError(f'unknown behavior {behavior!r}')
    for image in kustomization.get('images', []):
        for doc in docs:
            for container in _containers(doc):
                name, _, _tag = container['image'].partition('@')[0].rpartition(':')
                name = name or container['image']
                if name == image['name']:
                    ref = image.get('newName', name)
                    ref += f'@{image["digest"]}' if 'digest' in image else f':{image.get("newTag", _tag)}'
                    container['image'] = ref
    return docs, generated


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    if doc.get('kind') not in ('Deployment', 'StatefulSet', 'DaemonSet'):
        return []
    spec = doc['spec']['template']['spec']
    return [*spec.get('initContainers', []), *spec.get('containers', [])]


def build(directory: Path) -> list[dict[str, Any]]:
    """The objects `kustomize build directory` makes, within SUPPORTED."""
    docs, generated = _build(directory)
    renamed = {}
    for (_ns, name), cm in generated.items():
        digest = hashlib.sha256(json.dumps(cm['data'], sort_keys=True).encode()).hexdigest()[:10]
        cm['metadata']['name'] = renamed[name] = f'{name}-{digest}'
    for doc in docs:  # the references kustomize renames: envFrom, env valueFrom and configMap volumes
        if doc.get('kind') not in ('Deployment', 'StatefulSet', 'DaemonSet'):
            continue
        spec = doc['spec']['template']['spec']
        for container in _containers(doc):
            for source in container.get('envFrom', []):
                ref = source.get('configMapRef')
                if ref and ref['name'] in renamed:
                    ref['name'] = renamed[ref['name']]
            for env in container.get('env', []):
                ref = env.get('valueFrom', {}).get('configMapKeyRef')
                if ref and ref['name'] in renamed:
                    ref['name'] = renamed[ref['name']]
        for volume in spec.get('volumes', []):
            if 'configMap' in volume and volume['configMap']['name'] in renamed:
                volume['configMap']['name'] = renamed[volume['configMap']['name']]
    return docs
