# SPDX-License-Identifier: Apache-2.0
"""vmwatch: vSphere changes in, Kubernetes reconcile requests out, fast and without noise."""

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
from vmwatch.settings import (
    DEFAULT_IGNORED_EXTRA_CONFIG_KEYS,
    DEFAULT_WATCHED_PATHS,
    FilterSettings,
    SettingsError,
    WatchSettings,
)

# Heavier pieces load on first use, so `import vmwatch` does not import pyVmomi or the Kubernetes client.
_LAZY = {
    'Watcher': 'vmwatch.watcher',
    'WatcherSlot': 'vmwatch.watcher',
    'NoWatcherError': 'vmwatch.watcher',
    'AsyncSignalDisabledError': 'vmwatch.watcher',
    'Service': 'vmwatch.service',
    'WorkQueue': 'vmwatch.queue',
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    import importlib

    return getattr(importlib.import_module(module), name)


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
