# SPDX-License-Identifier: Apache-2.0
"""controller-runtime's flag names, the former names as hidden deprecated aliases, and the watched paths and
ignored extraConfig keys as settings (issue 14)."""

from __future__ import annotations

import argparse

import pytest

from vmwatch import docs_gen
from vmwatch.settings import (
    DEFAULT_IGNORED_EXTRA_CONFIG_KEYS,
    DEFAULT_WATCHED_PATHS,
    ServiceSettings,
    SettingsError,
    add_service_arguments,
    deprecated_names,
    load_service_settings,
)

BASE = {'VMWATCH_VC_URL': 'https://vc.example.com/sdk', 'VMWATCH_VC_USER': 'u', 'VMWATCH_VC_PASSWORD_FILE': '/pw'}
FORMER = {  # former flag -> (its variable, the new flag, the new variable, the field)
    '--health-addr': ('VMWATCH_HEALTH_ADDR', '--health-probe-bind-address', 'VMWATCH_HEALTH_PROBE_BIND_ADDRESS',
                      'health_probe_bind_address'),
    '--lease-duration-s': ('VMWATCH_LEASE_DURATION_S', '--leader-elect-lease-duration',
                           'VMWATCH_LEADER_ELECT_LEASE_DURATION', 'lease_duration_s'),
    '--renew-deadline-s': ('VMWATCH_RENEW_DEADLINE_S', '--leader-elect-renew-deadline',
                           'VMWATCH_LEADER_ELECT_RENEW_DEADLINE', 'renew_deadline_s'),
    '--retry-period-s': ('VMWATCH_RETRY_PERIOD_S', '--leader-elect-retry-period', 'VMWATCH_LEADER_ELECT_RETRY_PERIOD',
                         'retry_period_s'),
    '--additional-ignored-keys': ('VMWATCH_ADDITIONAL_IGNORED_KEYS', '--ignored-extra-config-keys-add',
                                  'VMWATCH_IGNORED_EXTRA_CONFIG_KEYS_ADD', 'ignored_extra_config_keys_add'),
}  # fmt: skip
VALUES = {  # field -> (a raw value, what it reads as)
    'health_probe_bind_address': ('127.0.0.1:9999', '127.0.0.1:9999'),
    'lease_duration_s': ('20s', 20.0),
    'renew_deadline_s': ('1m', 60.0),
    'retry_period_s': ('500ms', 0.5),
    'ignored_extra_config_keys_add': ('a,b', ('a', 'b')),
}


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_service_arguments(parser)
    return parser.parse_args(argv)


def load(args: argparse.Namespace | None = None, **env: str) -> ServiceSettings:
    return load_service_settings(args or argparse.Namespace(), {**BASE, **env})


def test_controller_runtime_names_and_defaults() -> None:
    s = load(parse('--metrics-bind-address', ':9090', '--health-probe-bind-address', '127.0.0.1:9091',
                   '--leader-elect=false', '--leader-elect-lease-duration', '30s', '--leader-elect-renew-deadline',
                   '20s', '--leader-elect-retry-period', '5s')).validate()  # fmt: skip
    assert (s.metrics_bind_address, s.health_probe_bind_address, s.leader_elect) == (':9090', '127.0.0.1:9091', False)
    assert (s.lease_duration_s, s.renew_deadline_s, s.retry_period_s) == (30.0, 20.0, 5.0)
    d = ServiceSettings()
    assert (d.metrics_bind_address, d.health_probe_bind_address, d.leader_elect) == (':8080', ':8081', True)
    env = load(VMWATCH_METRICS_BIND_ADDRESS='0', VMWATCH_LEADER_ELECT_LEASE_DURATION='1m').validate()
    assert env.metrics_bind_address == '0' and env.lease_duration_s == 60.0  # 0: no metrics listener


@pytest.mark.parametrize('value', ['8080', ':http', 'host:', '::8080:99999'])
def test_a_bad_metrics_address_is_one_clear_error(value: str) -> None:
    with pytest.raises(SettingsError, match='--metrics-bind-address'):
        load(VMWATCH_METRICS_BIND_ADDRESS=value).validate()


@pytest.mark.parametrize('former', FORMER)
def test_a_former_name_still_works_below_the_new_one_and_is_reported(former: str) -> None:
    old_env, new_flag, new_env, name = FORMER[former]
    raw, value = VALUES[name]
    assert getattr(load(parse(former, raw)), name) == value
    assert getattr(load(**{old_env: raw}), name) == value
    note = ' (/metrics has its own --metrics-bind-address now, default :8080)' if former == '--health-addr' else ''
    assert deprecated_names(parse(former, raw), {}) == [f'{former} is deprecated (issue 14): use {new_flag}{note}']
    assert deprecated_names(parse(), {old_env: raw}) == [f'{old_env} is deprecated (issue 14): use {new_env}{note}']
    assert deprecated_names(parse(), {old_env: ''}) == []  # an empty variable is unset (old ConfigMaps list them)
    default = getattr(ServiceSettings(), name)
    # precedence: new flag, former flag, new variable, former variable
    assert getattr(load(parse(new_flag, raw, former, 'x:1')), name) == value
    assert getattr(load(parse(former, raw), **{new_env: 'x:1'}), name) == value
    assert getattr(load(parse(), **{new_env: raw, old_env: 'x:1'}), name) == value
    assert getattr(load(parse()), name) == default


def test_former_names_are_hidden_from_help_and_documented_as_former() -> None:
    text = docs_gen.run_help()
    reference = docs_gen.configuration_markdown()
    for former, (old_env, new_flag, new_env, _name) in FORMER.items():
        assert former not in text.replace(new_flag, '') and old_env not in text
        assert new_flag in text and new_env in text
        assert f'| `{former}` | `{old_env}` | `{new_flag}` | `{new_env}` |' in reference


def test_watched_paths_replace_add_and_remove() -> None:
    assert load().filter_settings().watched_paths == DEFAULT_WATCHED_PATHS
    s = load(VMWATCH_WATCHED_PATHS_ADD='guest.toolsRunningStatus,summary.guest',
             VMWATCH_WATCHED_PATHS_REMOVE='summary.overallStatus,parent')  # fmt: skip
    paths = s.validate().filter_settings().watched_paths
    expected = [p for p in DEFAULT_WATCHED_PATHS if p not in ('summary.overallStatus', 'parent')]
    assert paths == (*expected, 'guest.toolsRunningStatus')  # order kept, duplicates dropped
    replaced = load(parse('--watched-paths', 'summary.runtime.powerState, config.hardware.numCPU'))
    assert replaced.filter_settings().watched_paths == ('summary.runtime.powerState', 'config.hardware.numCPU')
    both = load(VMWATCH_WATCHED_PATHS='summary.guest,parent', VMWATCH_WATCHED_PATHS_REMOVE='parent')
    assert both.filter_settings().watched_paths == ('summary.guest',)  # the edit applies to the replacement


@pytest.mark.parametrize(
    ('env', 'message'),
    [
        ({'VMWATCH_WATCHED_PATHS_REMOVE': 'guest.net'}, "--watched-paths-remove: 'guest.net' is not watched"),
        ({'VMWATCH_WATCHED_PATHS': 'summary.guest', 'VMWATCH_WATCHED_PATHS_REMOVE': 'summary.guest'},
         'no property path left to watch'),
        ({'VMWATCH_WATCHED_PATHS': 'guest.ipStack[0].ipRoute[0]'}, 'is not a property path'),
        ({'VMWATCH_WATCHED_PATHS_ADD': 'summary guest'}, 'is not a property path'),
        ({'VMWATCH_IGNORED_EXTRA_CONFIG_KEYS_REMOVE': 'guestinfo.userdata'},
         "--ignored-extra-config-keys-remove: 'guestinfo.userdata' is not ignored"),
    ],
)  # fmt: skip
def test_a_bad_edit_of_the_lists_is_one_clear_error(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace('[', r'\[').replace('.', r'\.')):
        load(**env).validate()


def test_an_empty_flag_value_watches_nothing_and_is_refused() -> None:
    with pytest.raises(SettingsError, match='no property path left'):
        load(parse('--watched-paths', '')).validate()
    assert load(VMWATCH_WATCHED_PATHS='').filter_settings().watched_paths == DEFAULT_WATCHED_PATHS  # unset


def test_ignored_keys_replace_add_and_remove() -> None:
    assert load().filter_settings().all_ignored_keys() == DEFAULT_IGNORED_EXTRA_CONFIG_KEYS
    s = load(
        VMWATCH_IGNORED_EXTRA_CONFIG_KEYS_ADD='tools.heartbeat', VMWATCH_IGNORED_EXTRA_CONFIG_KEYS_REMOVE='govcsim'
    )
    keys = s.validate().filter_settings().all_ignored_keys()
    assert keys == (*(k for k in DEFAULT_IGNORED_EXTRA_CONFIG_KEYS if k != 'govcsim'), 'tools.heartbeat')
    only = load(VMWATCH_IGNORED_EXTRA_CONFIG_KEYS='a.b,c').filter_settings()
    assert only.all_ignored_keys() == ('a.b', 'c')
    none = load(parse('--ignored-extra-config-keys', '')).validate().filter_settings()
    assert none.all_ignored_keys() == ()  # ignoring nothing is allowed: every extraConfig change signals
