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

__all__ = [
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
