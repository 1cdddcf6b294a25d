# SPDX-License-Identifier: Apache-2.0
"""`vmwatch decode FILE...`: decode raw WaitForUpdatesEx response bodies with the Rust core.

Prints one JSON object per object update (stateless: no cache, no index), or with `--stats` one
object per file with the decode + decide time measured in-process. It is how others check the
decoder against pyVmomi, and the number the benchmarks compare.

It is strict, unlike the watcher: the watcher skips an undecodable object update and keeps the rest
of the response (spec 7.2 #3), but `vmwatch decode` is the checker, so any bad object update is an
error here: exit 2 naming the file, the byte offset and the object, before printing anything of that
file (with --stats too). A body (or a .gz member, inflated) larger than --max-body-bytes is refused
the same way, read in chunks so that a gzip bomb never inflates past the limit.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
import zlib
from pathlib import Path
from typing import Any

from vmwatch import _vmwatch
from vmwatch.settings import DEFAULT_IGNORED_EXTRA_CONFIG_KEYS, DEFAULT_WATCHED_PATHS, NAMESPACED_NAME_KEY
from vmwatch.types import Kind

__all__ = ['DEFAULT_MAX_BODY_BYTES', 'BodyTooLargeError', 'add_parser', 'read_body', 'run']

DEFAULT_MAX_BODY_BYTES = 1 << 30
"""Largest body read (1 GiB), inflated: far above any real WaitForUpdatesEx page (≤ 100 objects)."""

_CHUNK = 1 << 20


class BodyTooLargeError(ValueError):
    """A body (inflated, for .gz) larger than the limit."""


def add_parser(subparsers: Any) -> None:
    """Register the `decode` subcommand on an argparse subparsers object."""
    p = subparsers.add_parser(
        'decode',
        help='decode raw WaitForUpdatesEx response bodies (.gz accepted), one JSON line per object update',
        description=__doc__,
    )
    p.add_argument('files', nargs='+', type=Path, metavar='FILE', help='response body (raw bytes, or gzipped .gz)')
    p.add_argument('--no-filter', action='store_true', help='keep every extraConfig key (ignore no key)')
    p.add_argument(
        '--stats',
        action='store_true',
        help='print one JSON object per file instead: bytes, objects, changes, seconds (decode + decide only)',
    )
    p.add_argument('--name-key', default=NAMESPACED_NAME_KEY, help='extraConfig key holding "namespace/name"')
    p.add_argument(
        '--max-body-bytes',
        type=_positive_int,
        default=DEFAULT_MAX_BODY_BYTES,
        metavar='N',
        help=f'refuse a body larger than N bytes, after gunzip (default {DEFAULT_MAX_BODY_BYTES}: 1 GiB)',
    )
    p.set_defaults(func=run)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'not a whole number: {text!r}') from None
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be at least 1, not {value}')
    return value


def read_body(path: Path, *, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> bytes:
    """The file's bytes, gunzipped when it ends in .gz. Raises BodyTooLargeError past `max_bytes`
    (inflated): a .gz is inflated in chunks, so a gzip bomb stops at the limit."""
    if path.suffix != '.gz':
        size = path.stat().st_size
        if size > max_bytes:
            raise BodyTooLargeError(f'{size} bytes, more than the limit of {max_bytes} (--max-body-bytes)')
        return path.read_bytes()
    out = bytearray()
    with gzip.open(path, 'rb') as f:
        while chunk := f.read(_CHUNK):
            out += chunk
            if len(out) > max_bytes:
                raise BodyTooLargeError(
                    f'inflates to more than the limit of {max_bytes} bytes (--max-body-bytes): a gzip bomb?'
                )
    return bytes(out)


def _stats(body: bytes, *, ignored: tuple[str, ...], name_key: str) -> dict[str, Any]:
    decider = _vmwatch.Decider(
        index=_vmwatch.Index(), watched_paths=DEFAULT_WATCHED_PATHS, ignored_keys=ignored, name_key=name_key
    )
    started = time.perf_counter()
    result = decider.decide(body)
    seconds = time.perf_counter() - started
    if isinstance(result, _vmwatch.Fault):
        return {'bytes': len(body), 'objects': 0, 'changes': 0, 'seconds': seconds, 'fault': result.fault_type}
    if result.bad:
        # strict, as without --stats: the same error decode() raises for the first bad object update
        _vmwatch.decode(body, ignored_keys=ignored, name_key=name_key)
    return {'bytes': len(body), 'objects': result.objects, 'changes': result.changes, 'seconds': seconds}


def run(args: argparse.Namespace) -> int:
    """Decode every file; exit 2 naming the file and the byte offset on malformed input."""
    ignored: tuple[str, ...] | None = None if args.no_filter else tuple(DEFAULT_IGNORED_EXTRA_CONFIG_KEYS)
    out = sys.stdout
    for path in args.files:
        try:
            body = read_body(path, max_bytes=args.max_body_bytes)
        except BodyTooLargeError as e:
            print(f'vmwatch decode: {path}: refused: {e}', file=sys.stderr)
            return 2
        except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as e:
            print(f'vmwatch decode: {path}: cannot read: {e}', file=sys.stderr)
            return 2
        try:
            if args.stats:
                out.write(json.dumps(_stats(body, ignored=ignored or (), name_key=args.name_key)) + '\n')
                continue
            version, truncated, updates = _vmwatch.decode(body, ignored_keys=ignored, name_key=args.name_key)
        except _vmwatch.DecodeError as e:
            print(f'vmwatch decode: {path}: malformed response at byte offset {e.offset}: {e}', file=sys.stderr)
            return 2
        for moref, obj_type, kind, props, keys, namespaced_name in updates:
            record = {
                'version': version,
                'truncated': truncated,
                'obj': moref,
                'type': obj_type,
                'kind': Kind(kind).label,
                'props': list(props),
                'extra_config_keys': None if keys is None else list(keys),
                'namespaced_name': namespaced_name,
            }
            out.write(json.dumps(record) + '\n')
    out.flush()
    return 0
