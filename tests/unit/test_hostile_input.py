# SPDX-License-Identifier: Apache-2.0
"""Hostile or huge response bodies (issue 8): a clear DecodeError, bounded memory, never a panic or silent loss.

Every case goes through the public API (`Decider.decide` and `decode`). The limits themselves are
constants in rust/xml.rs and rust/decode.rs (see docs/architecture.md, decoder section).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from vmwatch import _vmwatch
from vmwatch.settings import DEFAULT_IGNORED_EXTRA_CONFIG_KEYS, DEFAULT_WATCHED_PATHS

DATA = Path(__file__).parent.parent / 'data'
MAX_DEPTH = 256  # rust/decode.rs MAX_DEPTH
MAX_ATTR_VALUE_LEN = 64 * 1024 - 1  # rust/xml.rs
MAX_ATTRS = 64  # rust/xml.rs
MAX_NAME_LEN = 1024  # rust/xml.rs
MAX_XSI_PREFIXES = 16  # rust/decode.rs

HEAD = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"'
    b' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
    b'<soapenv:Body><WaitForUpdatesExResponse xmlns="urn:vim25"><returnval><version>7</version><filterSet>'
)
TAIL = b'</filterSet></returnval></WaitForUpdatesExResponse></soapenv:Body></soapenv:Envelope>'


def change(name: bytes, val: bytes, *, op: bytes = b'assign') -> bytes:
    return b'<changeSet><name>' + name + b'</name><op>' + op + b'</op>' + val + b'</changeSet>'


def option(key: bytes, value: bytes) -> bytes:
    return (
        b'<OptionValue xsi:type="OptionValue"><key>' + key + b'</key>'
        b'<value xsi:type="xsd:string">' + value + b'</value></OptionValue>'
    )


def object_set(moref: bytes, *changes: bytes, kind: bytes = b'modify') -> bytes:
    return (
        b'<objectSet><kind>'
        + kind
        + b'</kind><obj type="VirtualMachine">'
        + moref
        + b'</obj>'
        + b''.join(changes)
        + b'</objectSet>'
    )


def doc(*object_sets: bytes) -> bytes:
    return HEAD + b''.join(object_sets) + TAIL


def power(state: bytes = b'poweredOn') -> bytes:
    return change(b'summary.runtime.powerState', b'<val xsi:type="VirtualMachinePowerState">' + state + b'</val>')


def good(val: bytes = b'<val xsi:type="VirtualMachinePowerState">poweredOn</val>') -> bytes:
    """A well-formed body with one VM whose powerState value is `val`."""
    return doc(object_set(b'vm-1', change(b'summary.runtime.powerState', val)))


def decider() -> _vmwatch.Decider:
    return _vmwatch.Decider(
        index=_vmwatch.Index(), watched_paths=DEFAULT_WATCHED_PATHS, ignored_keys=DEFAULT_IGNORED_EXTRA_CONFIG_KEYS
    )


def rejected(body: bytes) -> dict[str, Any]:
    """The one error record of `body`, which both entry points must reject the same way."""
    with pytest.raises(_vmwatch.DecodeError) as info:
        decider().decide(body)
    [rec] = info.value.errors()
    assert rec['offset'] == info.value.offset
    assert 0 <= rec['offset'] <= len(body)
    assert str(rec['offset']) in str(info.value)
    with pytest.raises(_vmwatch.DecodeError) as again:
        _vmwatch.decode(body)
    assert again.value.errors() == [rec]
    return rec


def test_the_template_is_accepted() -> None:
    # the cases below differ from this body only by the hostile part
    version, truncated, [(moref, typ, kind, props, _, _)] = _vmwatch.decode(good())
    assert (version, truncated, moref, typ, kind, props) == (
        '7',
        False,
        'vm-1',
        'VirtualMachine',
        1,
        ('summary.runtime.powerState',),
    )


def test_dtd_and_entity_declarations_are_refused() -> None:
    rec = rejected((DATA / 'handmade-dtd.xml').read_bytes())
    assert (rec['type'], rec['offset']) == ('dtd_forbidden', 22)
    # billion laughs: refused at the declaration, before any expansion
    lol = b'<!DOCTYPE lolz [<!ENTITY lol "lol">' + b''.join(
        b'<!ENTITY lol%d "%s">' % (i, (b'&lol%d;' % (i - 1) if i > 1 else b'&lol;') * 10) for i in range(1, 10)
    )
    body = good().replace(b'\n', b'\n' + lol + b']>\n', 1).replace(b'<version>7<', b'<version>&lol9;<')
    rec = rejected(body)
    assert (rec['type'], rec['offset']) == ('dtd_forbidden', body.index(b'<!DOCTYPE'))
    # a stray entity declaration anywhere
    body = good().replace(b'<filterSet>', b'<filterSet><!ENTITY x "y">')
    assert rejected(body)['type'] == 'dtd_forbidden'


@pytest.mark.parametrize(
    ('where', 'body'),
    [
        ('text', good().replace(b'<version>7<', b'<version>&lol;<')),
        ('value', good(b'<val xsi:type="xsd:string">a&lol;b</val>')),
        ('skipped', good().replace(b'<filterSet>', b'<other><x>&lol;</x></other><filterSet>')),
        ('attribute', good(b'<val xsi:type="&lol;">x</val>')),
    ],
)
def test_undefined_entities_are_refused(where: str, body: bytes) -> None:
    rec = rejected(body)
    assert rec['type'] == 'unknown_entity', where
    assert body[rec['offset'] :].startswith(b'&lol;') or body[rec['offset'] :].startswith(b'<val'), where


def test_references_in_attributes_are_resolved() -> None:
    # an escaped attribute means what it says, not its raw bytes
    body = doc(object_set(b'vm-1', power()).replace(b'type="VirtualMachine"', b'type="Virtual&#77;achine"'))
    [(_, typ, *_)] = _vmwatch.decode(body)[2]
    assert typ == 'VirtualMachine'
    plain = _vmwatch.decode(good(b'<val xsi:type="xsd:string">x</val>'))
    escaped = _vmwatch.decode(good(b'<val xsi:type="xsd:&#115;tring">x</val>'))
    assert plain == escaped


@pytest.mark.parametrize('depth', [MAX_DEPTH + 1, 10_000, 200_000])
@pytest.mark.parametrize('where', ['value', 'skipped'])
def test_deep_nesting_is_refused(depth: int, where: str) -> None:
    nest = b'<a>' * depth + b'x' + b'</a>' * depth
    if where == 'value':
        body = good(b'<val xsi:type="Foo">' + nest + b'</val>')
    else:
        body = good().replace(b'<filterSet>', b'<ignored>' + nest + b'</ignored><filterSet>')
    rec = rejected(body)
    assert rec['type'] == 'too_deep'
    assert body[rec['offset'] :].startswith(b'<a>')
    if where == 'value':
        assert rec['loc'] == ('vm-1', 'summary.runtime.powerState')


def test_nesting_just_under_the_limit_is_accepted() -> None:
    # Envelope, Body, Response, returnval, filterSet, objectSet, changeSet, val: 8 levels above the value
    inner = MAX_DEPTH - 8
    body = good(b'<val xsi:type="Foo">' + b'<a>' * inner + b'x' + b'</a>' * inner + b'</val>')
    assert _vmwatch.decode(body)[2][0][0] == 'vm-1'
    assert rejected(body.replace(b'<a>', b'<a><a>', 1).replace(b'</a>', b'</a></a>', 1))['type'] == 'too_deep'


def test_long_attribute_values_are_refused() -> None:
    ok = good(b'<val xsi:type="' + b'T' * MAX_ATTR_VALUE_LEN + b'">x</val>')
    assert _vmwatch.decode(ok)[2][0][0] == 'vm-1'
    for n in (MAX_ATTR_VALUE_LEN + 1, 4 * 1024 * 1024):
        body = good(b'<val xsi:type="VirtualMachinePowerState" junk="' + b'J' * n + b'">poweredOn</val>')
        rec = rejected(body)
        assert rec['type'] == 'too_long'
        assert rec['offset'] == body.index(b'"J') and rec['loc'] == ('vm-1', 'summary.runtime.powerState')
    # also in an element the decoder skips
    body = good().replace(b'<filterSet>', b'<x a="' + b'J' * (MAX_ATTR_VALUE_LEN + 1) + b'"/><filterSet>')
    assert rejected(body)['type'] == 'too_long'


def test_long_element_names_are_refused() -> None:
    name = b'n' * (MAX_NAME_LEN + 1)
    body = good(b'<val xsi:type="Foo"><' + name + b'>x</' + name + b'></val>')
    rec = rejected(body)
    assert rec['type'] == 'too_long' and rec['offset'] == body.index(b'<' + name)


def test_large_text_content_is_accepted_and_fingerprinted() -> None:
    # guestinfo.userdata can be megabytes: text is not limited (only by the body itself)
    def userdata(fill: bytes) -> bytes:
        val = b'<val xsi:type="ArrayOfOptionValue">' + option(b'guestinfo.userdata', fill * (8 << 20)) + b'</val>'
        return doc(object_set(b'vm-1', change(b'config.extraConfig', val)))

    d = decider()
    assert isinstance(d.decide(userdata(b'a')), _vmwatch.Batch)
    b = d.decide(userdata(b'b'))
    assert isinstance(b, _vmwatch.Batch) and b.changes == 1
    [(_, _, _, props, keys, _)] = _vmwatch.decode(userdata(b'c'))[2]
    assert props == ('config.extraConfig',) and keys == ('guestinfo.userdata',)


@pytest.mark.parametrize(
    ('where', 'body', 'needle'),
    [
        ('moref', doc(object_set(b'vm-\xff1', power())), b'\xff'),
        ('value', good(b'<val xsi:type="xsd:string">caf\xc3</val>'), b'\xc3<'),
        ('element name', good(b'<val xsi:type="Foo"><b\xe9>x</b\xe9></val>'), b'\xe9'),
        ('attribute', good(b'<val xsi:type="Foo" x="\x80">x</val>'), b'\x80'),
        ('skipped', good().replace(b'<filterSet>', b'<x>\xfe</x><filterSet>'), b'\xfe'),
        ('overlong', good(b'<val xsi:type="xsd:string">\xc0\xaf</val>'), b'\xc0'),
        ('surrogate', good(b'<val xsi:type="xsd:string">\xed\xa0\x80</val>'), b'\xed'),
    ],
)
def test_invalid_utf8_is_refused(where: str, body: bytes, needle: bytes) -> None:
    rec = rejected(body)
    assert rec['type'] == 'not_utf8', where
    assert rec['offset'] == body.index(needle), where


@pytest.mark.parametrize(
    'body',
    [
        doc(object_set(b'vm-\x001', power())),
        good(b'<val xsi:type="xsd:string">a\x00b</val>'),
        good().replace(b'<filterSet>', b'<x>\x00</x><filterSet>'),
        good() + b'\x00',
    ],
)
def test_nul_bytes_are_refused(body: bytes) -> None:
    rec = rejected(body)
    assert (rec['type'], rec['offset']) == ('invalid_char', body.index(b'\x00'))


def test_truncated_documents_are_refused() -> None:
    body = doc(*(object_set(b'vm-%d' % i, power()) for i in range(3)))
    for n in range(len(body)):
        rec = rejected(body[:n])
        assert rec['type'] in {'xml_syntax', 'not_soap'}, n


@pytest.mark.parametrize(
    ('body', 'construct'),
    [
        (good(b'<val xsi:type="xsd:string"><![CDATA[abc</val>' + TAIL), b'<![CDATA['),
        (good().replace(b'<filterSet>', b'<filterSet><!-- no end'), b'<!--'),
        (good().replace(b'<filterSet>', b'<filterSet><? no end'), b'<?'),
        (good(b'<val xsi:type="xsd:string">x</val'), b'</val'),
        (good(b'<val xsi:type="xsd:string>x</val>'), b'"xsd'),
    ],
)
def test_unterminated_constructs_are_refused(body: bytes, construct: bytes) -> None:
    rec = rejected(body)
    assert rec['type'] == 'xml_syntax'
    assert body[rec['offset'] :].startswith(construct)


@pytest.mark.parametrize(
    'pi',
    [b'<?xml-stylesheet href="a.xsl"?>', b'<?php echo 1; ?>', b'<?xml version="1.0"?>', b'<?XML version="1.0"?>'],
)
def test_processing_instructions_other_than_the_declaration_are_refused(pi: bytes) -> None:
    body = good().replace(b'<filterSet>', b'<filterSet>' + pi)
    rec = rejected(body)
    assert (rec['type'], rec['offset']) == ('pi_forbidden', body.index(pi))
    # the declaration itself is only accepted first in the document
    moved = good().replace(b'<?xml version="1.0" encoding="UTF-8"?>\n', b'\n', 1) + b'<?xml version="1.0"?>'
    assert rejected(moved)['type'] == 'pi_forbidden'
    assert _vmwatch.decode(good().split(b'\n', 1)[1])[0] == '7', 'no declaration at all is fine'


def test_huge_numbers_of_attributes_are_refused() -> None:
    ok = good(b'<val xsi:type="Foo"' + b''.join(b' a%d="1"' % i for i in range(MAX_ATTRS - 1)) + b'>x</val>')
    assert _vmwatch.decode(ok)[2][0][0] == 'vm-1'
    for n in (MAX_ATTRS + 1, 100_000):
        body = good(b'<val xsi:type="Foo"' + b''.join(b' a%d="1"' % i for i in range(n)) + b'>x</val>')
        rec = rejected(body)
        assert (rec['type'], rec['offset']) == ('too_many_attributes', body.index(b'<val'))


def test_many_xsi_prefixes_are_refused() -> None:
    # each would make every later attribute lookup slower: bounded, repeated declarations are free
    xsi = b'http://www.w3.org/2001/XMLSchema-instance'
    decls = b''.join(b' xmlns:p%d="%s"' % (i, xsi) for i in range(MAX_XSI_PREFIXES + 1))
    body = good(b'<val' + decls + b' p0:type="Foo">x</val>')
    rec = rejected(body)
    assert rec['type'] == 'too_many_attributes'
    same = good(b'<val xmlns:xsi="' + xsi + b'" xsi:type="Foo"><a xmlns:xsi="' + xsi + b'">x</a></val>')
    assert _vmwatch.decode(same)[2][0][0] == 'vm-1'


def test_malformed_attributes_are_refused() -> None:
    assert rejected(good(b'<val xsi:type="Foo" xsi:type="Bar">x</val>'))['type'] == 'xml_syntax'
    assert rejected(good(b'<val xsi:type="a<b">x</val>'))['type'] == 'xml_syntax'
    body = doc(object_set(b'vm-1', power()).replace(b'<obj type="VirtualMachine">', b'<obj type="A" type="B">'))
    assert rejected(body)['type'] == 'xml_syntax'


BIG_BODY_CHILD = textwrap.dedent(
    """
    import json, sys
    from vmwatch import _vmwatch
    from vmwatch.settings import DEFAULT_IGNORED_EXTRA_CONFIG_KEYS, DEFAULT_WATCHED_PATHS

    def status(key):
        for line in open('/proc/self/status'):
            if line.startswith(key + ':'):
                return int(line.split()[1]) * 1024

    def reset_peak():
        # writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0)
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')

    body = open(sys.argv[1], 'rb').read()
    out = {'bytes': len(body)}
    d = _vmwatch.Decider(
        index=_vmwatch.Index(), watched_paths=DEFAULT_WATCHED_PATHS, ignored_keys=DEFAULT_IGNORED_EXTRA_CONFIG_KEYS
    )
    reset_peak()
    before = status('VmRSS')
    batch = d.decide(body)
    out['decide_peak_extra'] = status('VmHWM') - before
    out['objects'], out['changes'] = batch.objects, batch.changes
    del batch
    reset_peak()
    before = status('VmRSS')
    version, truncated, updates = _vmwatch.decode(body, ignored_keys=DEFAULT_IGNORED_EXTRA_CONFIG_KEYS)
    out['decode_peak_extra'] = status('VmHWM') - before
    out['updates'] = len(updates)
    print(json.dumps(out))
    """
)


def big_body(path: Path, *, target_bytes: int) -> tuple[int, int]:
    """Write a body of about `target_bytes`: every third VM enters with its extraConfig and devices,
    the others change their power state. Returns (objects, changes).
    """
    n = changes = 0
    with path.open('wb') as f:
        f.write(HEAD)
        size = len(HEAD)
        while size < target_bytes:
            if n % 3:
                chunk = object_set(b'vm-%d' % n, power(), power(b'poweredOff'))
                f.write(chunk)
                size += len(chunk)
                n += 1
                changes += 2
                continue
            ec = b''.join(option(b'guestinfo.k%d' % k, b'v%d-%d' % (n, k) * 4) for k in range(6))
            ec += option(b'vmservice.namespacedName', b'ns-%d/vm-%d' % (n % 97, n))
            devices = b''.join(
                b'<VirtualDevice xsi:type="VirtualDisk"><key>%d</key><deviceInfo xsi:type="Description">'
                b'<label>Hard disk %d</label><summary>16,777,216 KB</summary></deviceInfo>'
                b'<controllerKey>1000</controllerKey><unitNumber>%d</unitNumber><capacityInKB>16777216</capacityInKB>'
                b'</VirtualDevice>' % (2000 + d, d, d)
                for d in range(3)
            )
            chunk = object_set(
                b'vm-%d' % n,
                change(b'config.extraConfig', b'<val xsi:type="ArrayOfOptionValue">' + ec + b'</val>'),
                change(b'config.hardware.device', b'<val xsi:type="ArrayOfVirtualDevice">' + devices + b'</val>'),
                power(),
                change(b'config.instanceUuid', b'<val xsi:type="xsd:string">4203c5a1-%08x</val>' % n),
                change(b'config.keyId', b'', op=b'assign'),
                kind=b'enter',
            )
            f.write(chunk)
            size += len(chunk)
            n += 1
            changes += 5
        f.write(TAIL)
    return n, changes


def test_a_100_mb_body_decodes_in_bounded_memory(tmp_path: Path) -> None:
    # Runs against the installed build: ~7 s with the release build `make test` installs, ~40 s with
    # `make build-dev` (2-core machine, 2026-11-25). No timing is asserted.
    path = tmp_path / 'big.xml'
    objects, changes = big_body(path, target_bytes=100 << 20)
    size = path.stat().st_size
    proc = subprocess.run(
        [sys.executable, '-c', BIG_BODY_CHILD, str(path)], capture_output=True, text=True, check=True, timeout=240
    )
    out = json.loads(proc.stdout)
    assert out['bytes'] == size
    assert (out['objects'], out['changes'], out['updates']) == (objects, changes, objects)
    # Measured (release, 2026-11-25; 100 MiB, 100,567 objects, 301,703 changes): peak extra RSS 1.35x the
    # body for decide (141 MB: the decoded update set, the coalescing map, the Batch and its Python objects),
    # 0.60x for decode. Values are streamed into fingerprints, so memory grows with the number of object
    # updates (~1.1-1.4 KB each), not with value sizes: a body of nothing but 217-byte objectSets measured
    # 4.9x for decide (483,727 objects, 1.06 KB each), which the per-object bound below covers.
    assert out['decide_peak_extra'] < 3 * size, out
    assert out['decide_peak_extra'] < 4096 * objects, out
    assert out['decode_peak_extra'] < 3 * size, out
