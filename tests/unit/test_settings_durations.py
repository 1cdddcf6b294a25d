# SPDX-License-Identifier: Apache-2.0
"""Durations in Go syntax for every setting measured in seconds (issue 14), plain seconds still accepted."""

from __future__ import annotations

import argparse
from dataclasses import fields

import pytest

from vmwatch.settings import ServiceSettings, SettingsError, env_name, load_service_settings, parse_duration

BASE = {'VMWATCH_VC_URL': 'https://vc.example.com/sdk', 'VMWATCH_VC_USER': 'u', 'VMWATCH_VC_PASSWORD_FILE': '/pw'}


@pytest.mark.parametrize(
    ('text', 'seconds'),
    [('30', 30.0), ('0.5', 0.5), ('15s', 15.0), ('2m', 120.0), ('1h30m', 5400.0), ('500ms', 0.5), ('1.5h', 5400.0),
     ('1m30.5s', 90.5), ('250us', 0.00025), ('-2s', -2.0), ('0', 0.0), ('0s', 0.0)],
)  # fmt: skip
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize('text', ['', 's', '5x', '1m 2s', 'h1', '1.2.3s', '--1s', '2 m', '1d'])
def test_not_a_duration(text: str) -> None:
    with pytest.raises(ValueError, match='not a duration'):
        parse_duration(text)


def load(**env: str) -> ServiceSettings:
    return load_service_settings(argparse.Namespace(), {**BASE, **env})


def test_every_seconds_setting_takes_a_duration_from_the_environment_and_flags() -> None:
    seconds = [f for f in fields(ServiceSettings) if f.metadata['unit'] == 's']
    assert len(seconds) >= 10
    for f in seconds:
        got = getattr(load(**{env_name(f.name): '1m30s'}), f.name)
        assert got == 90 and type(got) is (int if str(f.type) == 'int' else float), f.name
    flags = argparse.Namespace(lease_duration_s='2m', renew_deadline_s='90s')
    s = load_service_settings(flags, BASE)
    assert (s.lease_duration_s, s.renew_deadline_s) == (120.0, 90.0)
    assert load(VMWATCH_MAX_WAIT_S='5m').max_wait_s == 300


def test_a_bad_duration_is_one_clear_error() -> None:
    with pytest.raises(
        SettingsError,
        match=r"VMWATCH_LEADER_ELECT_LEASE_DURATION / --leader-elect-lease-duration: '15 seconds' is not a valid",
    ):
        load(VMWATCH_LEADER_ELECT_LEASE_DURATION='15 seconds')
    for bad in ('1.5s', 'inf', 'nan', '-inf'):
        with pytest.raises(SettingsError, match='whole seconds'):
            load(VMWATCH_MAX_WAIT_S=bad)
    with pytest.raises(SettingsError, match='renew-deadline'):
        load(VMWATCH_LEADER_ELECT_LEASE_DURATION='10s', VMWATCH_LEADER_ELECT_RENEW_DEADLINE='1m').validate()
