# SPDX-License-Identifier: Apache-2.0
"""The Rust core through its Python API, on bodies captured from vcsim (tests/data)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from vmwatch import _vmwatch
from vmwatch.settings import DEFAULT_IGNORED_EXTRA_CONFIG_KEYS, DEFAULT_WATCHED_PATHS
from vmwatch.types import Kind

DATA = Path(__file__).parent.parent / 'data'


def body(name: str) -> bytes:
    return (DATA / name).read_bytes()


def decider(ix: _vmwatch.Index | None = None, **kw: object) -> _vmwatch.Decider:
    return _vmwatch.Decider(
        index=ix if ix is not None else _vmwatch.Index(),
        watched_paths=DEFAULT_WATCHED_PATHS,
        ignored_keys=(*DEFAULT_IGNORED_EXTRA_CONFIG_KEYS, 'ignoredKey1'),
        **kw,  # type: ignore[arg-type]
    )


def batch(d: _vmwatch.Decider, name: str) -> _vmwatch.Batch:
    r = d.decide(body(name))
    assert isinstance(r, _vmwatch.Batch), r
    return r


def test_kind_constants_match_the_python_enum() -> None:
    assert {k.name: k.value for k in Kind} == {
        'ENTER': _vmwatch.KIND_ENTER,
        'MODIFY': _vmwatch.KIND_MODIFY,
        'LEAVE': _vmwatch.KIND_LEAVE,
    }


def test_module_metadata_and_exceptions() -> None:
    assert _vmwatch.__version__
    assert 'profile=' in _vmwatch.build_info
    assert issubclass(_vmwatch.DecodeError, _vmwatch.VmwatchError)
    assert issubclass(_vmwatch.DecodeError, ValueError)
    assert issubclass(_vmwatch.VmwatchInternalError, RuntimeError)
    assert issubclass(_vmwatch.VmwatchInternalError, _vmwatch.VmwatchError)
    assert _vmwatch.DecodeError.__module__ == 'vmwatch._vmwatch'


def test_lifecycle_on_captured_bodies() -> None:
    d = decider()
    b = batch(d, 'initial-sync.xml')
    assert (b.version, b.truncated, b.objects, b.changes) == ('-', False, 4, 124)
    [s] = b.signals
    assert (s.namespace, s.name, s.kind, s.reason, s.verified, s.deleting) == (
        'my-namespace-1',
        'my-name-1',
        Kind.ENTER,
        'entered',
        False,
        False,
    )
    assert len(s.changed) == len(DEFAULT_WATCHED_PATHS) and isinstance(s.changed, tuple)
    assert sorted(p.moref for p in b.pending) == sorted({'vm-82', 'vm-84', 'vm-86', 'vm-88'} - {s.moref})
    assert batch(d, 'extraconfig-modify.xml').signals[0].changed == ('config.extraConfig',)
    assert batch(d, 'extraconfig-ignored-only.xml').skipped['unchanged'] == 1
    assert batch(d, 'extraconfig-remove.xml').signals[0].reason == 'changed'
    assert 'summary.runtime.powerState' in batch(d, 'power-on.xml').signals[0].changed
    assert batch(d, 'snapshot.xml').signals[0].changed == ('rootSnapshot', 'snapshot')
    left = batch(d, 'destroy.xml')
    assert left.skipped == dict.fromkeys(('unchanged', 'deleting', 'verified_enter', 'unmanaged', 'delivered'), 0) | {
        'left': 1
    }
    assert batch(d, 'heartbeat.xml').version is None
    stats = d.cache_stats()
    assert set(stats) == {'added', 'evicted', 'expired', 'hits', 'misses', 'items', 'bytes', 'negative'} | {
        'records',
        'records_bytes',
    }
    assert stats['items'] == 3 and stats['bytes'] > 0
    assert 'Signal(' in repr(s) and 'Batch(' in repr(left)


def test_faults_are_results() -> None:
    d = decider()
    for name, fault_type in [
        ('fault-not-authenticated.xml', 'NotAuthenticated'),
        ('fault-request-canceled.xml', 'RequestCanceled'),
        ('handmade-fault-invalid-version.xml', 'InvalidCollectorVersion'),
    ]:
        r = d.decide(body(name))
        assert isinstance(r, _vmwatch.Fault)
        assert r.fault_type == fault_type


def test_index_verification_and_pending_resolution() -> None:
    ix = _vmwatch.Index()
    d = decider(ix)
    ix.upsert('my-namespace-1', 'my-name-1', unique_id='vm-82', deleting=False, priority=42)
    ix.upsert('other', 'by-uid', unique_id='vm-84', deleting=False, priority=1)
    assert len(ix) == 2 and ix.bytes() > 0
    assert ix.get('my-namespace-1', 'my-name-1') == ('vm-82', False, 42)
    assert ix.by_unique_id('vm-84') == ('other', 'by-uid')
    b = batch(d, 'initial-sync.xml')
    assert b.skipped['verified_enter'] == 2
    assert sorted(p.moref for p in b.pending) == ['vm-86', 'vm-88']
    s = batch(d, 'power-on.xml').signals[0]
    assert (s.verified, s.priority) == (True, 42)
    # step G: one VM is not managed, the other is named by the fetch
    p86, p88 = sorted(b.pending, key=lambda p: p.moref)
    assert d.resolve(p86.moref, p86.kind, p86.changed, '', '') is None
    assert d.cache_stats()['negative'] == 1
    got = d.resolve(p88.moref, p88.kind, p88.changed, 'ns', 'fetched')
    assert got is not None and (got.namespace, got.name, got.reason, got.verified) == (
        'ns',
        'fetched',
        'entered',
        False,
    )
    # deleting: skipped and evicted
    ix.upsert('my-namespace-1', 'my-name-1', unique_id='vm-82', deleting=True, priority=97)
    assert batch(d, 'snapshot.xml').skipped['deleting'] == 1
    assert ix.delete('my-namespace-1', 'my-name-1') and not ix.delete('my-namespace-1', 'my-name-1')
    d.forget('vm-84')
    d.purge()
    assert d.cache_stats()['items'] == 0
    ix.clear()
    assert len(ix) == 0


def test_signal_on_leave() -> None:
    ix = _vmwatch.Index()
    ix.upsert('ns', 'gone', unique_id='vm-84', deleting=False, priority=3)
    d = decider(ix, signal_on_leave=True)
    batch(d, 'initial-sync.xml')
    [s] = batch(d, 'destroy.xml').signals
    assert (s.moref, s.kind, s.reason, s.name) == ('vm-84', Kind.LEAVE, 'left', 'gone')


def test_ttl_expiry_makes_a_first_sighting() -> None:
    d = decider(cache_ttl_s=0.0)
    batch(d, 'initial-sync.xml')
    assert len(batch(d, 'initial-sync.xml').signals) == 1  # nothing survived


def test_lru_bound() -> None:
    d = decider(cache_max_entries=2)
    batch(d, 'initial-sync.xml')
    assert d.cache_stats()['items'] == 2 and d.cache_stats()['evicted'] == 2


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match='cache_max_entries'):
        decider(cache_max_entries=0)
    with pytest.raises(ValueError, match='cache_ttl_s'):
        decider(cache_ttl_s=-1.0)
    with pytest.raises(TypeError):
        _vmwatch.Decider(index=_vmwatch.Index(), watched_paths='config.extraConfig', ignored_keys=())
    with pytest.raises(ValueError, match='64'):
        _vmwatch.Decider(index=_vmwatch.Index(), watched_paths=[f'p{i}' for i in range(65)], ignored_keys=())
    with pytest.raises(ValueError, match='kind'):
        decider().resolve('vm-1', 7, (), 'a', 'b')


def test_decode_errors_carry_offset_and_location() -> None:
    with pytest.raises(_vmwatch.DecodeError) as info:
        decider().decide(body('handmade-dtd.xml'))
    assert info.value.offset == 22
    [rec] = info.value.errors()
    assert rec['type'] == 'dtd_forbidden' and rec['offset'] == 22 and rec['loc'] == (None, None)
    cut = body('power-on.xml')[:2000]
    with pytest.raises(_vmwatch.DecodeError) as info:
        decider().decide(cut)
    [rec] = info.value.errors()
    assert rec['type'] == 'xml_syntax' and rec['loc'][0] == 'vm-82'
    with pytest.raises(_vmwatch.DecodeError, match='soap_fault|SOAP fault'):
        _vmwatch.decode(body('fault-not-authenticated.xml'))


def test_stateless_decode() -> None:
    version, truncated, ups = _vmwatch.decode(
        body('extraconfig-modify.xml'), ignored_keys=DEFAULT_IGNORED_EXTRA_CONFIG_KEYS
    )
    assert (version, truncated) == ('-', False)
    [(moref, typ, kind, props, keys, nn)] = ups
    assert (moref, typ, kind, props, nn) == (
        'vm-82',
        'VirtualMachine',
        1,
        ('config.extraConfig',),
        'my-namespace-1/my-name-1',
    )
    assert keys == ('guestinfo.fromTheGuest', 'guestinfo.userdata', 'guestinfo.userdata.encoding', 'ignoredKey1')
    _, _, ups = _vmwatch.decode(body('extraconfig-modify.xml'))
    assert ups[0][4] is not None and 'vmservice.namespacedName' in ups[0][4]
    _, _, ups = _vmwatch.decode(body('power-on.xml'))
    assert ups[0][4] is None


def test_parse_namespaced_name() -> None:
    assert _vmwatch.parse_namespaced_name('a/b') == ('a', 'b')
    for bad in ('', 'a', 'a/', '/b', 'a/b/c'):
        assert _vmwatch.parse_namespaced_name(bad) is None


def big_body(copies: int) -> bytes:
    """initial-sync.xml with its object updates repeated under new MoRefs (about 45 KB per copy)."""
    raw = body('initial-sync.xml')
    start, end = raw.index(b'<objectSet>'), raw.rindex(b'</objectSet>') + len(b'</objectSet>')
    objects = raw[start:end]
    parts = [objects.replace(b'>vm-', b'>vm-' + str(i).encode() + b'-') for i in range(copies)]
    return raw[:start] + b''.join(parts) + raw[end:]


def test_decide_releases_the_gil() -> None:
    big = big_body(100)
    ticks = 0
    stop = threading.Event()

    def spin() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1

    t = threading.Thread(target=spin)
    t.start()
    try:
        during = []
        for _ in range(3):
            d = decider()
            before = ticks
            r = d.decide(big)
            during.append(ticks - before)
            assert isinstance(r, _vmwatch.Batch) and r.objects == 400
    finally:
        stop.set()
        t.join()
    # with the GIL held for the whole call the other thread could not count at all
    assert max(during) > 1000, during


def test_concurrent_deciders_and_index_writers() -> None:
    ix = _vmwatch.Index()
    errors: list[BaseException] = []

    def writer() -> None:
        for i in range(2000):
            ix.upsert('ns', f'n{i % 50}', unique_id=f'vm-{80 + i % 10}', deleting=i % 7 == 0, priority=i)

    def reader() -> None:
        try:
            d = decider(ix)
            for _ in range(50):
                d.decide(body('initial-sync.xml'))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer), *(threading.Thread(target=reader) for _ in range(3))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_a_verified_vm_re_entering_with_a_change_signals() -> None:
    """Only a first sighting of a verified VM entering scope is skipped. After a watcher restart every VM
    re-enters; one whose state changed while no watcher ran must signal, or that change is lost (issue 8)."""
    ix = _vmwatch.Index()
    d = decider(ix)
    ix.upsert('my-namespace-1', 'my-name-1', unique_id='vm-82', deleting=False, priority=42)
    ix.upsert('other', 'by-uid', unique_id='vm-84', deleting=False, priority=1)
    assert batch(d, 'initial-sync.xml').skipped['verified_enter'] == 2
    assert len(batch(d, 'power-on.xml').signals) == 1
    b = batch(d, 'initial-sync.xml')  # re-enter with the state from before the power-on
    assert [(s.moref, s.reason) for s in b.signals] == [('vm-82', 'entered')]
    assert b.skipped['verified_enter'] == 0 and b.skipped['unchanged'] >= 1
