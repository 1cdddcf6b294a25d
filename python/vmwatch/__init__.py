# SPDX-License-Identifier: Apache-2.0
"""vmwatch: vSphere changes in, Kubernetes reconcile requests out, fast and without noise."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vmwatch._vmwatch import (
        Batch,
        Decider,
        DecodeError,
        Fault,
        Index,
        Pending,
        Signal,
        VmwatchError,
        VmwatchInternalError,
        __version__,
        build_info,
    )
    from vmwatch.queue import WorkQueue
    from vmwatch.service import Service
    from vmwatch.settings import (
        DEFAULT_IGNORED_EXTRA_CONFIG_KEYS,
        DEFAULT_WATCHED_PATHS,
        FilterSettings,
        SettingsError,
        WatchSettings,
    )
    from vmwatch.watcher import AsyncSignalDisabledError, NoWatcherError, Watcher, WatcherSlot

# Every name loads on first use, so `import vmwatch` (and every `vmwatch` command, which imports this
# package first) pays only for what it touches: no pyVmomi, no Kubernetes client, no settings.
from vmwatch._lazy import lazy_exports

_LAZY = {
    **dict.fromkeys(
        (
            'Batch',
            'Decider',
            'DecodeError',
            'Fault',
            'Index',
            'Pending',
            'Signal',
            'VmwatchError',
            'VmwatchInternalError',
            '__version__',
            'build_info',
        ),
        'vmwatch._vmwatch',
    ),
    **dict.fromkeys(
        (
            'DEFAULT_IGNORED_EXTRA_CONFIG_KEYS',
            'DEFAULT_WATCHED_PATHS',
            'FilterSettings',
            'SettingsError',
            'WatchSettings',
        ),
        'vmwatch.settings',
    ),
    **dict.fromkeys(('Watcher', 'WatcherSlot', 'NoWatcherError', 'AsyncSignalDisabledError'), 'vmwatch.watcher'),
    'Service': 'vmwatch.service',
    'WorkQueue': 'vmwatch.queue',
}


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)


__all__ = [
    'AsyncSignalDisabledError',
    'NoWatcherError',
    'Service',
    'Watcher',
    'WatcherSlot',
    'WorkQueue',
    'DEFAULT_IGNORED_EXTRA_CONFIG_KEYS',
    'DEFAULT_WATCHED_PATHS',
    'Batch',
    'Decider',
    'DecodeError',
    'Fault',
    'FilterSettings',
    'Index',
    'Pending',
    'SettingsError',
    'Signal',
    'VmwatchError',
    'VmwatchInternalError',
    'WatchSettings',
    '__version__',
    'build_info',
]
