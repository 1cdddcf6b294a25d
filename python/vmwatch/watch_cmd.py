# SPDX-License-Identifier: Apache-2.0
"""`vmwatch watch`: the watcher alone, no Kubernetes. One JSON line per signal on stdout.

    vmwatch watch --vc-url https://vc.example.com/sdk --vc-user u --vc-password-file pw \\
        --vc-ca-file vc-ca.pem --container Folder:group-v3

Each line: namespace, name, moref, kind (enter/modify/leave), reason, changed (property paths). Without
Kubernetes nothing is verified, so a VM signals when its extraConfig carries "namespace/name". Runs
until SIGINT/SIGTERM (exit 0). A watcher that stops on its own (session or transport failure) exits 1
with the reason on stderr; bad flags exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson  # cheap (and loaded by vmwatch.logs anyway)

from vmwatch.settings import (
    FilterSettings,
    SettingsError,
    WatchSettings,
    check_ca_file,
    check_number,
    parse_bool,
    parse_whole_seconds,
)
from vmwatch.types import Kind
from vmwatch.vsphere.refs import MoRef

if TYPE_CHECKING:
    from vmwatch._vmwatch import Signal
    from vmwatch.vsphere.session import Endpoint

# asyncio (and ssl with it), the watcher and the session (pyVmomi) load in run(), not here: `vmwatch --help`
# builds this parser.

__all__ = ['add_parser', 'run', 'signal_json']

log = logging.getLogger('vmwatch.watch')

OWNER_ID = 'vmwatch-watch'  # the owner ID of every container given on the command line


def _env(name: str, default: str = '') -> str:
    return os.environ.get(name, default)


def add_parser(subparsers: Any) -> None:
    """Register `watch` on an argparse subparsers object."""
    p = subparsers.add_parser(
        'watch',
        help='watch vCenter containers and print one JSON line per VM to reconcile (no Kubernetes)',
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument('--vc-url', default=None, metavar='URL', help='vCenter SDK URL (env VMWATCH_VC_URL)')
    p.add_argument('--vc-user', default=None, metavar='USER', help='vCenter user (env VMWATCH_VC_USER)')
    p.add_argument(
        '--vc-password-file',
        type=Path,
        default=None,
        metavar='FILE',
        help='file holding the password, read on every login (env VMWATCH_VC_PASSWORD_FILE)',
    )
    tls = p.add_mutually_exclusive_group()
    tls.add_argument('--vc-ca-file', type=Path, default=None, metavar='FILE', help='CA bundle (env VMWATCH_VC_CA_FILE)')
    tls.add_argument(
        '--vc-thumbprint',
        default=None,
        metavar='THUMBPRINT',
        help='SHA-256 of the certificate, AA:BB:... (env VMWATCH_VC_THUMBPRINT)',
    )
    tls.add_argument(
        '--vc-insecure', action='store_true', default=None, help='skip TLS verification (env VMWATCH_VC_INSECURE)'
    )
    for new, old in _FORMER.items():  # the names before `run`'s vocabulary: accepted, hidden, logged as deprecated
        group = tls if new in ('vc_ca_file', 'vc_thumbprint', 'vc_insecure') else p
        kwargs: dict[str, Any] = {'action': 'store_true'} if new == 'vc_insecure' else {}
        if new in ('vc_password_file', 'vc_ca_file'):
            kwargs['type'] = Path
        group.add_argument(f'--{old}', dest=f'_former_{new}', default=None, help=argparse.SUPPRESS, **kwargs)
    p.add_argument(
        '--container',
        action='append',
        default=None,
        metavar='TYPE:ID',
        help='container to watch, e.g. Folder:group-v3; repeatable (env VMWATCH_CONTAINERS, comma-separated)',
    )
    p.add_argument(
        '--max-wait-s',
        default=None,
        metavar='DURATION',
        help='WaitForUpdatesEx MaxWaitSeconds [whole seconds, or a duration: 30s, 5m] (default 5m; '
        'env VMWATCH_MAX_WAIT_S)',
    )
    p.add_argument(
        '--max-object-updates',
        type=int,
        default=None,
        help='WaitForUpdatesEx MaxObjectUpdates [objects] (default 100; env VMWATCH_MAX_OBJECT_UPDATES)',
    )
    p.add_argument(
        '--ignore-key',
        action='append',
        default=None,
        metavar='KEY',
        help='extraConfig key to ignore on top of the defaults; repeatable (env VMWATCH_IGNORED_EXTRA_CONFIG_KEYS_ADD)',
    )
    p.set_defaults(func=run)


_FORMER = {
    'vc_url': 'server',
    'vc_user': 'user',
    'vc_password_file': 'password-file',
    'vc_ca_file': 'ca-file',
    'vc_thumbprint': 'thumbprint',
    'vc_insecure': 'insecure',
}
"""`vmwatch watch`'s flags before it spoke `run`'s vocabulary (issue 14) -> their former names."""


def _former_names(args: argparse.Namespace) -> None:
    """Fold the former flags into the new ones (a new flag wins), logging one deprecation warning for each given."""
    for new, old in _FORMER.items():
        value = getattr(args, f'_former_{new}', None)
        if value is None:
            continue
        log.warning('--%s is deprecated (issue 14): use --%s', old, new.replace('_', '-'))
        if getattr(args, new, None) is None:
            setattr(args, new, value)


def _whole_seconds(name: str, raw: str) -> int:
    """A Go-style duration (`30s`, `5m`) or plain seconds, as whole seconds; SettingsError otherwise."""
    try:
        return parse_whole_seconds(str(raw))
    except ValueError:
        raise SettingsError(
            f'{name}: {str(raw)[:40]!r} is not a duration of whole seconds (30s, 5m, or seconds)'
        ) from None


def _options(args: argparse.Namespace) -> tuple[Endpoint, dict[MoRef, list[str]], WatchSettings, FilterSettings]:
    """Flags over VMWATCH_* variables; SettingsError (or ValueError from Endpoint) when unusable."""
    from vmwatch.vsphere.session import Endpoint

    _former_names(args)
    url = args.vc_url or _env('VMWATCH_VC_URL')
    user = args.vc_user or _env('VMWATCH_VC_USER')
    password_file = args.vc_password_file or (Path(p) if (p := _env('VMWATCH_VC_PASSWORD_FILE')) else None)
    if not url or not user or password_file is None:
        raise SettingsError(
            '--vc-url, --vc-user and --vc-password-file are required (or VMWATCH_VC_URL, _USER, _PASSWORD_FILE)'
        )
    tls_flags = args.vc_ca_file is not None or args.vc_thumbprint is not None or args.vc_insecure is not None
    ca_file = args.vc_ca_file or (None if tls_flags else (Path(c) if (c := _env('VMWATCH_VC_CA_FILE')) else None))
    thumbprint = args.vc_thumbprint or (None if tls_flags else _env('VMWATCH_VC_THUMBPRINT') or None)
    insecure = bool(args.vc_insecure) or (
        not tls_flags and parse_bool('VMWATCH_VC_INSECURE', _env('VMWATCH_VC_INSECURE', 'false'))
    )
    endpoint = Endpoint(
        url=url, user=user, password_file=password_file, ca_file=ca_file, thumbprint=thumbprint, insecure=insecure
    )
    raw = args.container or [c for c in _env('VMWATCH_CONTAINERS').split(',') if c.strip()]
    if not raw:
        raise SettingsError('at least one --container TYPE:ID is required (or VMWATCH_CONTAINERS)')
    containers = {MoRef.parse(c.strip()): [OWNER_ID] for c in raw}
    max_wait = _whole_seconds('--max-wait-s / VMWATCH_MAX_WAIT_S', args.max_wait_s or _env('VMWATCH_MAX_WAIT_S', '300'))
    try:
        max_objects = (
            args.max_object_updates
            if args.max_object_updates is not None
            else int(_env('VMWATCH_MAX_OBJECT_UPDATES', '100'))
        )
    except ValueError as e:
        raise SettingsError(f'VMWATCH_MAX_OBJECT_UPDATES: {e}') from None
    check_number('max_wait_s', max_wait, 1, 3600)  # the bounds of `vmwatch run`
    check_number('max_object_updates', max_objects, 1, 100_000)
    check_ca_file('--vc-ca-file', endpoint.ca_file)
    raw_keys = _env('VMWATCH_IGNORED_EXTRA_CONFIG_KEYS_ADD') or _env('VMWATCH_ADDITIONAL_IGNORED_KEYS')
    keys = args.ignore_key or [k for k in raw_keys.split(',') if k.strip()]
    return (
        endpoint,
        containers,
        WatchSettings(max_wait_s=max_wait, max_object_updates=max_objects),
        FilterSettings(additional_ignored_keys=tuple(k.strip() for k in keys)),
    )


_KIND_LABELS = {int(k): k.label for k in Kind}


def signal_json(s: Signal) -> bytes:
    """One output line (without the newline)."""
    return orjson.dumps(
        {
            'namespace': s.namespace,
            'name': s.name,
            'moref': s.moref,
            'kind': _KIND_LABELS[s.kind],
            'reason': s.reason,
            'changed': s.changed,  # a tuple: orjson writes it as a JSON array
        }
    )


# pyVmomi loads the type tables of every endpoint it knows when first imported; `vmwatch watch` speaks
# only to the vim endpoint, so this process skips these (~3 MiB and ~15 ms of start-up).
_UNUSED_PYVMOMI_TYPES = ('eam', 'pbm', 'sms', 'vslm', 'vsanhealth')


def _skip_unused_pyvmomi_types() -> None:
    """Before pyVmomi's first import in this process (a no-op once it is imported, e.g. by embedding code)."""
    if 'pyVmomi' in sys.modules:
        return
    for name in _UNUSED_PYVMOMI_TYPES:
        sys.modules.setdefault(f'pyVmomi._typeinfo_{name}', None)  # type: ignore[arg-type]  # None: import fails


def run(args: argparse.Namespace) -> int:
    _skip_unused_pyvmomi_types()
    import asyncio

    from vmwatch.vsphere.errors import VsphereError

    try:
        endpoint, containers, settings, filter_settings = _options(args)
    except (SettingsError, ValueError) as e:
        print(f'vmwatch watch: {e}', file=sys.stderr)
        return 2
    try:
        return asyncio.run(_watch(endpoint, containers, settings, filter_settings))
    except VsphereError as e:
        print(f'vmwatch watch: {e}', file=sys.stderr)
        return 1


async def _watch(
    endpoint: Endpoint, containers: dict[MoRef, list[str]], settings: WatchSettings, filter_settings: FilterSettings
) -> int:
    import asyncio

    from vmwatch.watcher import Watcher

    out = sys.stdout.buffer
    loop = asyncio.get_running_loop()
    async with Watcher(
        endpoint=endpoint, containers=containers, settings=settings, filter_settings=filter_settings
    ) as watcher:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(watcher.aclose()))
        try:
            async for s in watcher:
                # the signals already waiting go out in the same write: one syscall per batch, not per VM
                out.write(b''.join([signal_json(s), b'\n', *(signal_json(t) + b'\n' for t in watcher.drain())]))
                out.flush()
        except BrokenPipeError:  # e.g. `vmwatch watch ... | head -1`
            with contextlib.suppress(OSError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush does not fail
            return 0
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
    return 0
