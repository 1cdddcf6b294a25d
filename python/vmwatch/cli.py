# SPDX-License-Identifier: Apache-2.0
"""The `vmwatch` command: decode, watch, run, demo, devenv.

Subcommands import their modules lazily so `vmwatch --help` stays fast and a missing optional
piece breaks only its own command.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from vmwatch.logs import configure_logging

__all__ = ['main']

# subcommand -> module providing add_parser(subparsers) and run(args) -> int
_COMMANDS = {
    'decode': 'vmwatch.decode',
    'watch': 'vmwatch.watch_cmd',
    'run': 'vmwatch.run_cmd',
    'demo': 'vmwatch.demo',
}


def _add_devenv(sub: Any) -> None:
    p = sub.add_parser('devenv', help='build, start and stop the local test servers (vcsim, kube-apiserver, etcd)')
    p.set_defaults(func=_run_devenv)
    dsub = p.add_subparsers(dest='devenv_cmd', required=True)
    up = dsub.add_parser('up', help='start vcsim (and kube-apiserver + etcd), print one JSON object, return')
    up.add_argument('--vcsim-args', default='', help='extra vcsim flags, e.g. "-cluster 2 -vm 10"')
    up.add_argument('--no-kube', action='store_true', help='start vcsim only')
    up.add_argument('--state-dir', type=Path, default=None, help='where state and logs go (default: cache dir)')
    down = dsub.add_parser('down', help='stop what `up` started')
    down.add_argument('--state-dir', type=Path, default=None)
    dsub.add_parser('build', help='build the pinned servers once (cached under ~/.cache/vmwatch); print seconds')


def _run_devenv(args: argparse.Namespace) -> int:
    from vmwatch import devenv

    if args.devenv_cmd == 'build':
        print(json.dumps(devenv.build_all()))
        return 0
    if args.devenv_cmd == 'down':
        stopped = devenv.down(state_dir=args.state_dir)
        print(json.dumps({'stopped': stopped}))
        return 0
    info = devenv.up(state_dir=args.state_dir, vcsim_args=args.vcsim_args.split(), kube=not args.no_kube)
    if info.get('kubeconfig'):
        from vmwatch.kube.crds import install_crds_from_kubeconfig

        install_crds_from_kubeconfig(Path(info['kubeconfig']))
    print(json.dumps(info))
    return 0


LOG_LEVELS = ('DEBUG', 'INFO', 'WARNING', 'ERROR')


class _Version(argparse.Action):
    """`--version`: the package's and the core's version and build (the extension loads only when asked)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help='print the version and the core build, then exit')

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> NoReturn:
        from vmwatch import _vmwatch

        print(f'vmwatch {_vmwatch.__version__} ({_vmwatch.build_info})')
        parser.exit(0)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr (exit 2), not the whole usage text."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f'{self.prog}: error: {message} (see {self.prog} --help)\n')


def command_of(argv: Sequence[str]) -> str | None:
    """The subcommand `argv` runs, when it can be told before parsing (else None: build every parser)."""
    args = iter(argv)
    for arg in args:
        if arg == '--log-level':
            next(args, None)
        elif arg.startswith('--log-level='):
            continue
        elif arg == '--version':
            return ''  # no subcommand's parser is needed: the action exits while parsing
        elif arg.startswith('-'):
            return None  # -h, --help or a usage error: the whole parser answers
        else:
            return arg if arg in _COMMANDS or arg == 'devenv' else None
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole `vmwatch` parser; with `only`, just that subcommand's (what parsing its arguments needs: the
    other commands' modules are not imported)."""
    parser = Parser(
        prog='vmwatch', description='vSphere changes in, Kubernetes reconcile requests out, fast and without noise.'
    )
    parser.add_argument(
        '--log-level',
        dest='root_log_level',
        default='INFO',
        type=str.upper,
        choices=LOG_LEVELS,
        help='DEBUG, INFO, WARNING or ERROR (default: INFO)',
    )
    parser.add_argument('--version', action=_Version)
    sub = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')
    for command, module_name in _COMMANDS.items():
        if only is not None and command != only:
            continue
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            if e.name != module_name:
                raise
            continue  # not built yet in this tree
        module.add_parser(sub)
    if only is None or only == 'devenv':
        _add_devenv(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(only=command_of(argv))
    args = parser.parse_args(argv)
    configure_logging(level=args.root_log_level)  # redacting, as `run` (which sets its own level and format)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == '__main__':
    sys.exit(main())
