# SPDX-License-Identifier: Apache-2.0
"""Hypothesis properties of the Rust core (decode + decide) against a pyVmomi-based reference."""

from __future__ import annotations

import random
from typing import Any

from core_reference import Reference, RefIndex
from core_soapgen import STYLES, Style, Update, VDevices, VEnum, VExtraConfig, VMoRef, VPrim, body
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmwatch import _vmwatch
from vmwatch.settings import DEFAULT_IGNORED_EXTRA_CONFIG_KEYS, DEFAULT_WATCHED_PATHS

IGNORED = frozenset(DEFAULT_IGNORED_EXTRA_CONFIG_KEYS) | {'ignoredKey1'}
NAME_KEY = 'vmservice.namespacedName'
MOREFS = ('vm-1', 'vm-2', 'vm-3', 'vm-4')
KEPT_KEYS = ('guestinfo.metadata', 'guestinfo.userdata', 'nvram', 'viv.moid', 'disk.enableUUID', 'a', 'b')
IGNORED_SAMPLE = ('govcsim', 'vmware.tools.internalversion', 'scsi0:0.redo', 'guestInfo.detailed.data', 'ignoredKey1')
NAMES = ('ns-1/vm-a', 'ns-2/vm-b', 'ns-1/vm-c', 'bad', 'a/b/c', '')
PROFILE = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

text = st.text(alphabet=st.sampled_from('abc xyz&<>"\'=/-_.0123456789é'), max_size=12)


@st.composite
def entry(draw: st.DrawFn) -> tuple[str, str, str]:
    key = draw(st.sampled_from(KEPT_KEYS + IGNORED_SAMPLE + (NAME_KEY,)))
    if key == NAME_KEY:
        return key, 'string', draw(st.sampled_from(NAMES))
    t = draw(st.sampled_from(('string', 'string', 'int', 'long', 'boolean')))
    if t in ('int', 'long'):
        return key, t, str(draw(st.integers(-3, 3)))
    if t == 'boolean':
        return key, t, draw(st.sampled_from(('true', 'false')))
    return key, t, draw(text)


def extra_config() -> st.SearchStrategy[VExtraConfig]:
    return st.lists(entry(), max_size=6, unique_by=lambda e: e[0]).map(lambda es: VExtraConfig(tuple(es)))


def devices() -> st.SearchStrategy[VDevices]:
    dev = st.tuples(
        st.sampled_from((100, 200, 300, 4000, 4001)),
        st.sampled_from(('VirtualDisk', 'VirtualVmxnet3', 'VirtualIDEController')),
        st.sampled_from(('disk', 'nic', 'IDE 0')),
    )
    return st.lists(dev, max_size=4, unique_by=lambda d: d[0]).map(lambda ds: VDevices(tuple(ds)))


VALUES: dict[str, st.SearchStrategy[Any]] = {
    'config.extraConfig': extra_config(),
    'config.hardware.device': devices(),
    'summary.runtime.powerState': st.sampled_from(('poweredOn', 'poweredOff')).map(
        lambda s: VEnum('VirtualMachinePowerState', s)
    ),
    'config.hardware.numCPU': st.integers(1, 4).map(lambda n: VPrim('int', str(n))),
    'summary.runtime.host': st.sampled_from(('host-1', 'host-2')).map(lambda h: VMoRef('HostSystem', h)),
    'config.annotation': text.map(lambda t: VPrim('string', t)),
    'config.cpuHotAddEnabled': st.sampled_from(('true', 'false')).map(lambda b: VPrim('boolean', b)),
}


@st.composite
def change(draw: st.DrawFn) -> tuple[str, str, Any]:
    path = draw(st.sampled_from(sorted(VALUES)))
    op = draw(st.sampled_from(('assign', 'assign', 'assign', 'remove')))
    value = None if op == 'remove' or draw(st.integers(0, 9)) == 0 else draw(VALUES[path])
    return path, op, value


@st.composite
def update(draw: st.DrawFn) -> Update:
    kind = draw(st.sampled_from(('enter', 'modify', 'modify', 'leave')))
    changes = [] if kind == 'leave' else draw(st.lists(change(), max_size=4))
    return draw(st.sampled_from(MOREFS)), kind, changes


batch = st.lists(update(), min_size=1, max_size=6)
index_op = st.tuples(
    st.sampled_from(NAMES[:3]),
    st.sampled_from(MOREFS + ('vm-other', '')),
    st.booleans(),
    st.integers(-100, 100),
    st.booleans(),  # delete instead of upsert
)


def make(signal_on_leave: bool = False) -> tuple[_vmwatch.Decider, _vmwatch.Index, Reference, RefIndex]:
    ix = _vmwatch.Index()
    d = _vmwatch.Decider(
        index=ix, watched_paths=DEFAULT_WATCHED_PATHS, ignored_keys=IGNORED, signal_on_leave=signal_on_leave
    )
    return d, ix, Reference(IGNORED, signal_on_leave=signal_on_leave), RefIndex()


def as_tuple(s: _vmwatch.Signal) -> tuple[Any, ...]:
    return (s.moref, s.kind, s.namespace, s.name, s.verified, s.priority, s.changed, s.reason)


def delivered(d: _vmwatch.Decider, s: _vmwatch.Signal | None) -> _vmwatch.Signal | None:
    """Every request is delivered at once: the reference has no delivery step (see test_delivery.py)."""
    if s is not None:
        d.delivered(s.moref, s.digest)
    return s


def handed_on(d: _vmwatch.Decider, b: bytes) -> None:
    """Decide `b` and finish the way the watcher does: every signal delivered, every name fetch done (no name)."""
    r = d.decide(b)
    assert isinstance(r, _vmwatch.Batch)
    for s in r.signals:
        delivered(d, s)
    for p in r.pending:
        assert d.resolve(p.moref, p.kind, p.changed, '', '') is None


def rust_decide(d: _vmwatch.Decider, b: bytes) -> dict[str, Any]:
    r = d.decide(b)
    assert isinstance(r, _vmwatch.Batch)
    for s in r.signals:
        delivered(d, s)
    return {
        'version': r.version,
        'signals': [as_tuple(s) for s in r.signals],
        'pending': [(p.moref, p.kind, p.changed) for p in r.pending],
        'skipped': r.skipped,
    }


@PROFILE
@given(
    steps=st.lists(st.tuples(st.lists(index_op, max_size=3), batch, st.sampled_from(STYLES)), min_size=1, max_size=4),
    signal_on_leave=st.booleans(),
    resolve_names=st.lists(st.sampled_from(NAMES), min_size=8, max_size=8),
)
def test_rust_agrees_with_pyvmomi_reference(
    steps: list[tuple[list[Any], list[Update], Style]], signal_on_leave: bool, resolve_names: list[str]
) -> None:
    d, ix, ref, rix = make(signal_on_leave)
    names = iter(resolve_names * 10)
    for ops, updates, style in steps:
        for nn, uid, deleting, prio, delete in ops:
            ns, name = nn.split('/')
            if delete:
                ix.delete(ns, name)
                rix.vms.pop((ns, name), None)
            else:
                ix.upsert(ns, name, unique_id=uid, deleting=deleting, priority=prio)
                rix.vms[(ns, name)] = (uid, deleting, prio)
        b = body(updates, style=style)
        got, want = rust_decide(d, b), ref.decide(b, rix)
        assert got == want, b.decode()
        # step G for the pending ones, with a name (or none) from the "fetch"
        for moref, kind, changed in got['pending']:
            parsed = _vmwatch.parse_namespaced_name(next(names))
            ns, name = parsed or ('', '')
            s = delivered(d, d.resolve(moref, kind, changed, ns, name))
            assert (None if s is None else as_tuple(s)) == ref.resolve(rix, moref, kind, changed, ns, name)


def shuffled(updates: list[Update], seed: int) -> list[Update]:
    rng = random.Random(seed)
    out: list[Update] = []
    for moref, kind, changes in updates:
        new = []
        for path, op, value in changes:
            if isinstance(value, VExtraConfig):
                es = list(value.entries)
                rng.shuffle(es)
                value = VExtraConfig(tuple(es))
            elif isinstance(value, VDevices):
                ds = list(value.devices)
                rng.shuffle(ds)
                value = VDevices(tuple(ds))
            new.append((path, op, value))
        out.append((moref, kind, new))
    return out


def no_leave(updates: list[Update]) -> list[Update]:
    return [u for u in updates if u[1] != 'leave'] or [('vm-1', 'modify', [])]


@PROFILE
@given(updates=batch, seed=st.integers(0, 1000), style=st.sampled_from(STYLES), style2=st.sampled_from(STYLES))
def test_order_and_bytes_never_change_a_fingerprint(
    updates: list[Update], seed: int, style: Style, style2: Style
) -> None:
    updates = no_leave(updates)
    d, _, _, _ = make()
    handed_on(d, body(updates, style=style))
    r = d.decide(body(shuffled(updates, seed), style=style2))
    assert isinstance(r, _vmwatch.Batch)
    assert r.signals == [] and r.pending == []
    assert r.skipped['unchanged'] == len({u[0] for u in updates})


@PROFILE
@given(updates=batch, style=st.sampled_from(STYLES))
def test_resending_unchanged_values_never_signals(updates: list[Update], style: Style) -> None:
    updates = no_leave(updates)
    d, ix, _, _ = make()
    ix.upsert('ns-1', 'vm-a', unique_id='', deleting=False, priority=1)
    b = body(updates, style=style)
    handed_on(d, b)
    r = d.decide(b)
    assert isinstance(r, _vmwatch.Batch)
    assert (r.signals, r.pending) == ([], [])


@PROFILE
@given(ec=extra_config(), style=st.sampled_from(STYLES))
def test_filtering_is_idempotent(ec: VExtraConfig, style: Style) -> None:
    def kept(v: VExtraConfig) -> tuple[str, ...]:
        _, _, ups = _vmwatch.decode(
            body([('vm-1', 'modify', [('config.extraConfig', 'assign', v)])], style=style), ignored_keys=IGNORED
        )
        keys = ups[0][4]
        assert keys is not None
        return keys

    once = kept(ec)
    filtered = VExtraConfig(tuple(e for e in ec.entries if e[0] not in IGNORED))
    assert kept(filtered) == once
    assert set(once) == {e[0] for e in ec.entries} - IGNORED
    # the decider agrees: dropping ignored entries is not a change
    d, _, _, _ = make()
    d.decide(body([('vm-1', 'enter', [('config.extraConfig', 'assign', ec)])], style=style))
    r = d.decide(body([('vm-1', 'modify', [('config.extraConfig', 'assign', filtered)])], style=style))
    assert isinstance(r, _vmwatch.Batch) and r.skipped['unchanged'] == 1


@PROFILE
@given(
    start=st.fixed_dictionaries({p: s for p, s in VALUES.items()}),
    path=st.sampled_from(sorted(VALUES)),
    new=st.data(),
    style=st.sampled_from(STYLES),
)
def test_a_real_change_always_signals(start: dict[str, Any], path: str, new: st.DataObject, style: Style) -> None:
    d, _, _, _ = make()
    changes = [(p, 'assign', v) for p, v in start.items()]
    d.decide(body([('vm-1', 'enter', changes)], style=style))
    if path == 'config.extraConfig':
        # change (or add) one non-ignored key
        key = new.draw(st.sampled_from(KEPT_KEYS))
        old = {e[0]: e for e in start[path].entries}
        value_text = new.draw(text.filter(lambda t: key not in old or old[key] != (key, 'string', t)))
        old[key] = (key, 'string', value_text)
        value: Any = VExtraConfig(tuple(old.values()))
    else:
        value = new.draw(VALUES[path].filter(lambda v: v != start[path]))
    r = d.decide(body([('vm-1', 'modify', [(path, 'assign', value)])], style=style))
    assert isinstance(r, _vmwatch.Batch)
    hits = [x for x in [*r.signals, *r.pending] if x.moref == 'vm-1']
    assert len(hits) == 1 and path in hits[0].changed
    # and a removal is a change too
    r = d.decide(body([('vm-1', 'modify', [(path, 'remove', None)])], style=style))
    assert isinstance(r, _vmwatch.Batch)
    assert [x.changed for x in [*r.signals, *r.pending]] == [(path,)]


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400) | st.text(max_size=300).map(str.encode))
def test_garbage_is_a_decode_error_never_a_crash(data: bytes) -> None:
    d, _, _, _ = make()
    try:
        d.decide(data)
    except _vmwatch.DecodeError as e:
        assert e.errors()[0]['type']
        assert 0 <= e.offset <= len(data)


@settings(max_examples=200, deadline=None)
@given(updates=batch, style=st.sampled_from(STYLES), cut=st.floats(0, 1), flip=st.integers(0, 10_000))
def test_mutilated_bodies_fail_cleanly(updates: list[Update], style: Style, cut: float, flip: int) -> None:
    b = bytearray(body(updates, style=style))
    b = b[: int(len(b) * cut)] if flip % 2 else b
    if b:
        b[flip % len(b)] = (b[flip % len(b)] + 1) % 256
    d, _, _, _ = make()
    try:
        d.decide(bytes(b))
    except _vmwatch.DecodeError:
        pass


def test_a_vm_that_gains_its_name_signals_though_the_name_key_is_ignored() -> None:
    """An unmanaged VM (no name at its name fetch) that is then named: one signal, and the same name
    written again with only ignored keys changed is no change (the operator rewrites it)."""
    d, ix, ref, rix = make()

    def ec(*entries: tuple[str, str]) -> VExtraConfig:
        return VExtraConfig(tuple((k, 'string', v) for k, v in entries))

    def both(updates: list[Update]) -> dict[str, Any]:
        b = body(updates)
        got = rust_decide(d, b)
        want = ref.decide(b, rix)
        assert {k: got[k] for k in ('signals', 'pending', 'skipped')} == {
            k: want[k] for k in ('signals', 'pending', 'skipped')
        }
        return got

    first = both([('vm-7', 'enter', [('config.extraConfig', 'assign', ec(('guestinfo.a', '1')))])])
    assert [p[0] for p in first['pending']] == ['vm-7']
    assert d.resolve('vm-7', 1, ('config.extraConfig',), '', '') is None  # the fetch found no name
    assert ref.resolve(rix, 'vm-7', 1, ('config.extraConfig',), '', '') is None
    with_name = ec(('guestinfo.a', '1'), ('vmservice.namespacedName', 'ns/web'))
    named = both([('vm-7', 'modify', [('config.extraConfig', 'assign', with_name)])])
    assert [(s[0], s[2], s[3], s[6]) for s in named['signals']] == [('vm-7', 'ns', 'web', ('config.extraConfig',))]
    again = both([('vm-7', 'modify', [('config.extraConfig', 'assign', with_name)])])
    assert again['signals'] == [] and again['skipped']['unchanged'] == 1
