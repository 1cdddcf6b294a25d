# SPDX-License-Identifier: Apache-2.0
"""`vmwatch decode FILE...` (python/vmwatch/decode.py), called in-process."""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import pytest

from vmwatch import decode as decode_cmd

DATA = Path(__file__).parent.parent / 'data'


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog='vmwatch')
    decode_cmd.add_parser(parser.add_subparsers())
    args = parser.parse_args(['decode', *argv])
    code = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_one_json_line_per_object_update(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, str(DATA / 'initial-sync.xml'), str(DATA / 'extraconfig-modify.xml'))
    assert code == 0
    lines = [json.loads(x) for x in out.splitlines()]
    assert len(lines) == 5
    first = lines[0]
    assert set(first) == {
        'version',
        'truncated',
        'obj',
        'type',
        'kind',
        'props',
        'extra_config_keys',
        'namespaced_name',
    }
    assert first['kind'] == 'enter' and first['type'] == 'VirtualMachine' and len(first['props']) == 31
    assert first['props'] == sorted(first['props'])
    last = lines[-1]
    assert last['kind'] == 'modify' and last['namespaced_name'] == 'my-namespace-1/my-name-1'
    assert 'vmservice.namespacedName' not in last['extra_config_keys']


def test_no_filter_and_gz(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gz = tmp_path / 'm.xml.gz'
    gz.write_bytes(gzip.compress((DATA / 'extraconfig-modify.xml').read_bytes()))
    code, out, _ = run(capsys, '--no-filter', str(gz))
    assert code == 0
    assert 'vmservice.namespacedName' in json.loads(out)['extra_config_keys']


def test_stats(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, '--stats', str(DATA / 'initial-sync.xml'))
    assert code == 0
    s = json.loads(out)
    assert s['bytes'] == (DATA / 'initial-sync.xml').stat().st_size
    assert (s['objects'], s['changes']) == (4, 124) and s['seconds'] > 0


def test_malformed_input_exits_2_naming_file_and_offset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / 'cut.xml'
    bad.write_bytes((DATA / 'power-on.xml').read_bytes()[:1000])
    code, out, err = run(capsys, str(bad))
    assert code == 2 and out == ''
    assert str(bad) in err and 'byte offset' in err
    code, _, err = run(capsys, str(DATA / 'handmade-dtd.xml'))
    assert code == 2 and 'offset 22' in err
    code, _, err = run(capsys, str(tmp_path / 'missing.xml'))
    assert code == 2 and 'cannot read' in err
