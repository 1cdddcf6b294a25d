# SPDX-License-Identifier: Apache-2.0
"""Delivery records and the checkpoint in the Rust core (issue 11, A1 and A2), through its Python API.

A restart is a new Decider (an empty fingerprint cache) that loads the old one's checkpoint; a watcher
restart is the same Decider seeing every VM `enter` again.
"""

from __future__ import annotations

import pytest
from core_soapgen import Update, VExtraConfig, VPrim, body
from hypothesis import given
from hypothesis import strategies as st

from vmwatch import _vmwatch
from vmwatch.settings import DEFAULT_IGNORED_EXTRA_CONFIG_KEYS, DEFAULT_WATCHED_PATHS

NS = 'ns-1'


def decider(ix: _vmwatch.Index) -> _vmwatch.Decider:
    return _vmwatch.Decider(
        index=ix, watched_paths=DEFAULT_WATCHED_PATHS, ignored_keys=DEFAULT_IGNORED_EXTRA_CONFIG_KEYS
    )


def index(n: int, *, verified: bool = True) -> _vmwatch.Index:
    """VirtualMachines vm-a0.. for vSphere VMs vm-0.. (linked by status.uniqueID when verified, else by name)."""
    ix = _vmwatch.Index()
    for i in range(n):
        ix.upsert(NS, f'vm-a{i}', unique_id=f'vm-{i}' if verified else '', deleting=False, priority=1)
    return ix


def vm(i: int, value: int, kind: str = 'enter', *, named: bool = False) -> Update:
    entries = [('guestinfo.state', 'string', str(value))]
    if named:
        entries.append(('vmservice.namespacedName', 'string', f'{NS}/vm-a{i}'))
    return (f'vm-{i}', kind, [
        ('config.extraConfig', 'assign', VExtraConfig(tuple(entries))),
        ('summary.config.name', 'assign', VPrim('string', f'vm-{i}')),
    ])  # fmt: skip


def decide(d: _vmwatch.Decider, updates: list[Update], *, deliver: bool = True) -> _vmwatch.Batch:
    b = d.decide(body(updates))
    assert isinstance(b, _vmwatch.Batch)
    if deliver:
        for s in b.signals:
            d.delivered(s.moref, s.digest)
    return b


def signalled(b: _vmwatch.Batch) -> dict[str, str]:
    return {s.moref: s.reason for s in b.signals}


def test_a_restart_signals_verified_vms_changed_while_away_and_nothing_else() -> None:
    ix = index(4)
    old = decider(ix)
    first = decide(old, [vm(i, 0) for i in range(4)])
    assert first.skipped['verified_enter'] == 4 and not first.signals  # the controller's own start covers them
    assert signalled(decide(old, [vm(1, 1, 'modify')])) == {'vm-1': 'changed'}  # delivered
    checkpoint = old.checkpoint()
    assert len(checkpoint) == 4 * 16

    new = decider(ix)  # the next process
    assert new.load_checkpoint(checkpoint) == 4
    # while no vmwatch watched: vm-2 changed; vm-3 changed and changed back
    b = decide(new, [vm(0, 0), vm(1, 1), vm(2, 7), vm(3, 0)])
    assert signalled(b) == {'vm-2': 'changed'}
    assert b.skipped['delivered'] == 3 and b.skipped['verified_enter'] == 0


def test_without_a_checkpoint_a_restart_keeps_todays_behaviour() -> None:
    ix = index(2)
    new = decider(ix)
    b = decide(new, [vm(0, 5), vm(1, 6)])
    assert not b.signals and b.skipped['verified_enter'] == 2


def test_a_change_decided_but_never_delivered_is_signalled_after_a_restart() -> None:
    ix = index(2)
    old = decider(ix)
    decide(old, [vm(0, 0), vm(1, 0)])
    decide(old, [vm(0, 1, 'modify')], deliver=False)  # the process died with vm-0's request in its queue
    checkpoint = old.checkpoint()
    new = decider(ix)
    new.load_checkpoint(checkpoint)
    assert signalled(decide(new, [vm(0, 1), vm(1, 0)])) == {'vm-0': 'changed'}


def test_a_reenter_of_an_undelivered_change_signals_again_until_delivered() -> None:
    """A2: the watcher restarted between decision and queue (e.g. the session dropped during the name
    fetch): the VM re-enters with the fingerprints already cached, and must not pass as unchanged."""
    ix = index(1, verified=False)
    d = decider(ix)
    decide(d, [vm(0, 0, named=True)])
    b = decide(d, [vm(0, 1, 'modify', named=True)], deliver=False)
    assert signalled(b) == {'vm-0': 'changed'}
    again = decide(d, [vm(0, 1, named=True)], deliver=False)  # a new watcher: every VM enters
    assert signalled(again) == {'vm-0': 'undelivered'}
    [s] = again.signals
    d.delivered(s.moref, s.digest)
    assert decide(d, [vm(0, 1, named=True)]).skipped['unchanged'] == 1


def test_an_undelivered_pending_name_fetch_signals_after_the_watcher_restarts() -> None:
    ix = index(1, verified=False)
    d = decider(ix)
    first = decide(d, [vm(0, 0)])  # no name in the update, none in the index: a name fetch
    assert [p.moref for p in first.pending] == ['vm-0']
    # the fetch failed with the session: nothing resolved; the next watcher's enter
    again = decide(d, [vm(0, 0)])
    assert [p.moref for p in again.pending] == ['vm-0']
    s = d.resolve('vm-0', _vmwatch.KIND_ENTER, ('config.extraConfig',), NS, 'vm-a0')
    assert s is not None and s.reason == 'entered'


def test_forget_makes_the_next_sighting_a_change_also_after_a_restart() -> None:
    ix = index(1)
    d = decider(ix)
    decide(d, [vm(0, 0)])
    d.forget('vm-0')
    new = decider(ix)
    new.load_checkpoint(d.checkpoint())
    assert signalled(decide(new, [vm(0, 0)])) == {'vm-0': 'changed'}


def test_records_of_vms_gone_while_away_are_dropped_after_the_initial_sync() -> None:
    ix = index(3)
    old = decider(ix)
    decide(old, [vm(i, 0) for i in range(3)])
    new = decider(ix)
    new.load_checkpoint(old.checkpoint())
    decide(new, [vm(0, 0), vm(1, 0)])  # vm-2 was destroyed while no vmwatch watched
    assert new.end_initial_sync() == 1
    assert len(new.checkpoint()) == 2 * 16
    # a leave drops the record as well
    decide(new, [('vm-1', 'leave', [])])
    assert len(new.checkpoint()) == 16


def test_a_checkpoint_that_is_not_whole_records_is_refused() -> None:
    d = decider(index(0))
    with pytest.raises(ValueError, match='16-byte records'):
        d.load_checkpoint(b'x' * 17)
    assert d.checkpoint() == b''


@given(
    values=st.lists(st.integers(0, 3), min_size=4, max_size=4),
    delivered=st.lists(st.booleans(), min_size=4, max_size=4),
    after=st.lists(st.integers(0, 3), min_size=4, max_size=4),
)
def test_nothing_lost_across_a_restart(values: list[int], delivered: list[bool], after: list[int]) -> None:
    """Whatever was delivered before the restart, every VM whose state now differs from its last delivered
    state is signalled after it, and no other."""
    ix = index(4)
    old = decider(ix)
    decide(old, [vm(i, 0) for i in range(4)])
    last = [0, 0, 0, 0]
    for i, (v, ok) in enumerate(zip(values, delivered, strict=True)):
        b = decide(old, [vm(i, v, 'modify')], deliver=ok)
        if ok and b.signals:
            last[i] = v  # an undelivered change leaves the last delivered state as it was
    new = decider(ix)
    new.load_checkpoint(old.checkpoint())
    b = decide(new, [vm(i, after[i]) for i in range(4)])
    assert set(signalled(b)) == {f'vm-{i}' for i in range(4) if last[i] != after[i]}
