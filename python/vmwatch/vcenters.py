# SPDX-License-Identifier: Apache-2.0
"""The vCenters one `vmwatch run` watches: one from the `--vc-*` flags (named `default`), or several from
`--vcenters-file` (issue 12).

    # vcenters.yaml: a list, or {vcenters: [...]}
    - name: site-a                      # a DNS label: it names the shard's Lease and metric label
      url: https://vc-a.example.com/sdk
      userFile: /etc/vmwatch/site-a/user  # or user: svc-vmwatch
      passwordFile: /etc/vmwatch/site-a/password
      caFile: /etc/vmwatch/site-a/ca.pem  # or thumbprint: AA:BB:...  or insecure: true

Relative paths are taken from the file's directory. Unknown keys are refused (a typo must not silently fall
back to a default), and every entry is checked like the flags (URL without user info, TLS choice, names).
Credentials files are read again on every login of that vCenter, so a rotated password is picked up.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    'DEFAULT_VCENTER',
    'MAX_VCENTER_NAME',
    'VCENTER_LABEL',
    'VCenter',
    'VCenterConfigError',
    'has_user_info',
    'load_vcenters_file',
]

DEFAULT_VCENTER = 'default'
"""The name of the one vCenter the `--vc-*` flags define."""

VCENTER_LABEL = 'vmwatch.dev/vcenter'
"""The label naming the vCenter a Zone or a VirtualMachine belongs to."""

MAX_VCENTER_NAME = 40
"""Longest vCenter name: it goes into `<lease>-<name>-checkpoint-<slot>-<part>` and into label values (63)."""

_NAME = re.compile(r'[a-z0-9]([-a-z0-9]*[a-z0-9])?')
_HEX64 = re.compile(r'[0-9a-f]{64}')
_KEYS = {
    'name': 'name',
    'url': 'url',
    'user': 'user',
    'userFile': 'user_file',
    'passwordFile': 'password_file',
    'caFile': 'ca_file',
    'thumbprint': 'thumbprint',
    'insecure': 'insecure',
}


class VCenterConfigError(ValueError):
    """A vCenter entry (or the file) cannot be used; the message names the entry and the key, never a secret."""


@dataclass(frozen=True, kw_only=True)
class VCenter:
    """One vCenter: where it is, how to log in, how to trust it. Secrets stay in files."""

    name: str = DEFAULT_VCENTER
    url: str = ''
    user: str = ''
    user_file: Path | None = None
    """Read on every login; wins over `user`."""
    password_file: Path | None = None
    ca_file: Path | None = None
    thumbprint: str = ''
    insecure: bool = False

    def check(self, *, flag: str = '--vc-') -> VCenter:
        """Raise VCenterConfigError with one clear message when this entry cannot work. `flag` is how the
        messages name the keys: '--vc-' (flags: `--vc-password-file`) or 'vcenter NAME: ' (a file entry: the
        message starts with it and names `passwordFile`)."""
        flags = flag == '--vc-'
        prefix = '' if flags else flag

        def key(k: str) -> str:
            return f'--vc-{k}' if flags else _camel(k)

        def fail(message: str) -> VCenterConfigError:
            return VCenterConfigError(prefix + message)

        if not _NAME.fullmatch(self.name) or len(self.name) > MAX_VCENTER_NAME:
            raise VCenterConfigError(
                f'vCenter name {self.name[:80]!r} must be a DNS label (a-z, 0-9, -) of at most {MAX_VCENTER_NAME}'
            )
        if not self.url:
            raise fail(f'{key("url")} is required')
        if has_user_info(self.url):  # checked first: no later message may echo the URL and its password
            raise fail(f'{key("url")} must not carry user info (user:password@): use {key("user")} and '
                       f'{key("password-file")}')  # fmt: skip
        if not self.url.startswith(('https://', 'http://')):
            raise fail(f'{key("url")} {self.url[:200]!r} is not an http(s) URL')
        if not (self.user or self.user_file):
            raise fail(f'{key("user")} or {key("user-file")} is required')
        if self.password_file is None:
            raise fail(f'{key("password-file")} is required')
        if self.url.startswith('http://') and not self.insecure:
            raise fail(f'a plain http:// {key("url")} needs {key("insecure")}')
        if self.insecure and (self.ca_file is not None or self.thumbprint):
            raise fail(f'{key("insecure")} cannot be combined with {key("ca-file")} or {key("thumbprint")}')
        if self.thumbprint and not _HEX64.fullmatch(self.thumbprint.replace(':', '').lower()):
            raise fail(f'{key("thumbprint")} must be a SHA-256 fingerprint: 64 hex digits, colons optional')
        return self

    @property
    def host(self) -> str:
        """host[:port] of the URL (a CloudEvents source, log lines): never user info, path or query."""
        parts = urlsplit(self.url)
        return parts.netloc.rpartition('@')[2]


def load_vcenters_file(path: Path) -> list[VCenter]:
    """The vCenters of a YAML file (see the module doc); VCenterConfigError with one line for anything wrong."""
    import yaml  # only `vmwatch run --vcenters-file` needs it (a dependency of the kubernetes client)

    try:
        text = path.read_text(encoding='utf-8')
    except OSError as e:
        raise VCenterConfigError(f'cannot read the vCenters file {str(path)!r}: {e.strerror}') from None
    except UnicodeDecodeError:
        raise VCenterConfigError(f'the vCenters file {str(path)!r} is not UTF-8 text') from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, 'problem_mark', None)
        where = f' at line {mark.line + 1}' if mark is not None else ''
        raise VCenterConfigError(f'the vCenters file {str(path)!r} is not valid YAML{where}') from None
    if isinstance(doc, Mapping) and set(doc) == {'vcenters'}:
        doc = doc['vcenters']
    if not isinstance(doc, list) or not doc:
        raise VCenterConfigError(f'the vCenters file {str(path)!r} must hold a non-empty list of vCenters')
    base = path.parent
    vcenters = [_entry(i, raw, base) for i, raw in enumerate(doc)]
    seen: set[str] = set()
    for vc in vcenters:
        if vc.name in seen:
            raise VCenterConfigError(f'the vCenters file names {vc.name!r} twice')
        seen.add(vc.name)
    return vcenters


def _entry(i: int, raw: Any, base: Path) -> VCenter:
    if not isinstance(raw, Mapping):
        raise VCenterConfigError(f'vCenters file entry {i + 1} is not a mapping of keys')
    name = raw.get('name')
    label = f'vcenter {name!r}: ' if isinstance(name, str) else f'vCenters file entry {i + 1}: '
    unknown = sorted(str(k) for k in raw if k not in _KEYS)
    if unknown:
        raise VCenterConfigError(f'{label}unknown key {unknown[0]!r} (known: {", ".join(_KEYS)})')
    values: dict[str, Any] = {}
    for key, value in raw.items():
        field_name = _KEYS[key]
        if field_name == 'insecure':
            if not isinstance(value, bool):
                raise VCenterConfigError(f'{label}insecure must be true or false')
            values[field_name] = value
        elif field_name.endswith('_file'):
            if not isinstance(value, str) or not value:
                raise VCenterConfigError(f'{label}{key} must be a file path')
            p = Path(value)
            values[field_name] = p if p.is_absolute() else base / p
        else:
            if not isinstance(value, str):
                raise VCenterConfigError(f'{label}{key} must be a string')
            values[field_name] = value
    if 'name' not in values:
        raise VCenterConfigError(f'{label}name is required')
    return VCenter(**values).check(flag=label)


def _camel(key: str) -> str:
    first, *rest = key.split('-')
    return first + ''.join(w.capitalize() for w in rest)


def has_user_info(url: str) -> bool:
    try:
        parts = urlsplit(url if '://' in url else f'https://{url}')
        return parts.username is not None or parts.password is not None
    except ValueError:
        return '@' in url
