# SPDX-License-Identifier: Apache-2.0
"""`vmwatch watch`'s options: durations as `run` takes them (issue 14), one clear error otherwise."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from vmwatch import watch_cmd
from vmwatch.settings import SettingsError


def options(tmp_path: Path, *argv: str, env: dict[str, str] | None = None, monkeypatch: pytest.MonkeyPatch) -> int:
    for k in ('VMWATCH_MAX_WAIT_S', 'VMWATCH_MAX_OBJECT_UPDATES'):
        monkeypatch.delenv(k, raising=False)
    for k, v in (env or {}).items():
        monkeypatch.setenv(k, v)
    password = tmp_path / 'pw'
    password.write_text('p\n')
    parser = argparse.ArgumentParser()
    watch_cmd.add_parser(parser.add_subparsers())
    args = parser.parse_args(['watch', '--vc-url', 'https://vc.example.com/sdk', '--vc-user', 'u',
                              '--vc-password-file', str(password), '--vc-insecure', '--container', 'Folder:group-v3',
                              *argv])  # fmt: skip
    return watch_cmd._options(args)[2].max_wait_s


@pytest.mark.parametrize(('argv', 'env', 'seconds'), [
    ((), {}, 300),
    (('--max-wait-s', '5m'), {}, 300),
    (('--max-wait-s', '90'), {}, 90),
    (('--max-wait-s', '1m30s'), {}, 90),
    ((), {'VMWATCH_MAX_WAIT_S': '2m'}, 120),
    (('--max-wait-s', '10s'), {'VMWATCH_MAX_WAIT_S': '2m'}, 10),
])  # fmt: skip
def test_max_wait_takes_a_duration_or_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: tuple[str, ...], env: dict[str, str], seconds: int
) -> None:
    assert options(tmp_path, *argv, env=env, monkeypatch=monkeypatch) == seconds


@pytest.mark.parametrize('raw', ['1.5', 'soon', '500ms', 'inf', '-1m', '2h'])
def test_a_bad_max_wait_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    with pytest.raises(SettingsError, match='max_wait_s|max-wait-s') as e:
        options(tmp_path, f'--max-wait-s={raw}', monkeypatch=monkeypatch)
    assert '\n' not in str(e.value)
