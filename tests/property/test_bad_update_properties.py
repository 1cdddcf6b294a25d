# SPDX-License-Identifier: Apache-2.0
"""Hypothesis: a bad object update costs only itself (issue 11 A5, spec 7.2 #3).

Deciding a response in which some object updates are undecodable gives exactly what deciding the same
response without them gives, once their VMs are forgotten; each is reported in `Batch.bad`, in order.
"""

from __future__ import annotations

from core_soapgen import STYLES, Style, Update, body
from hypothesis import given
from hypothesis import strategies as st
from test_core_properties import PROFILE, batch, make, rust_decide

from vmwatch import _vmwatch

# ways to spoil one objectSet while the XML stays well-formed, and the error type each gives
SPOIL = {
    'kind': 'invalid_value',  # <kind>sideways</kind>
    'op': 'invalid_value',  # <op>frob</op> in its first change
    'long_path': 'too_long',  # a property path over MAX_PATH_LEN in its first change
}


def spoil(u: Update, how: str) -> Update:
    moref, kind, changes = u
    if how == 'op' and changes:
        (path, _, value), *rest = changes
        return moref, kind, [(path, 'frob', value), *rest]
    if how == 'long_path' and changes:
        (_, op, value), *rest = changes
        return moref, kind, [('p' * 5000, op, value), *rest]
    return moref, 'sideways', changes


def error_type(u: Update, how: str) -> str:
    return SPOIL[how] if u[2] else 'invalid_value'  # without changes, the kind is spoiled


@PROFILE
@given(
    warm=batch,
    updates=batch,
    flags=st.lists(st.sampled_from([None, None, *SPOIL]), min_size=6, max_size=6),
    style=st.sampled_from(STYLES),
)
def test_a_bad_object_update_costs_only_itself(
    warm: list[Update], updates: list[Update], flags: list[str | None], style: Style
) -> None:
    d1, _, _, _ = make()
    d2, _, _, _ = make()
    rust_decide(d1, body(warm, style=style))
    rust_decide(d2, body(warm, style=style))
    spoiled = [(spoil(u, how) if how else u, how) for u, how in zip(updates, flags, strict=False)]
    types = [error_type(u, how) for u, how in spoiled if how]
    bad_morefs = [u[0] for u, how in spoiled if how]
    raw = body([u for u, _ in spoiled], version='2', style=style)
    got = d1.decide(raw)
    assert isinstance(got, _vmwatch.Batch)
    for moref in bad_morefs:
        d2.forget(moref)
    expected = rust_decide(d2, body([u for u, how in spoiled if not how], version='2', style=style))
    assert rust_decide_of(got) == expected
    assert got.objects == len(spoiled) - len(bad_morefs)
    assert [b[0] for b in got.bad] == bad_morefs
    offsets = [b[1] for b in got.bad]
    assert offsets == sorted(offsets) and all(0 < o < len(raw) for o in offsets)
    assert [b[2] for b in got.bad] == types
    assert all(len(b[3]) < 500 for b in got.bad)
    # the stateless decode stays strict: the first bad update is the error
    if bad_morefs:
        try:
            _vmwatch.decode(raw)
        except _vmwatch.DecodeError as e:
            [rec] = e.errors()
            assert (rec['loc'][0], rec['offset'], rec['type']) == got.bad[0][:3]
        else:
            raise AssertionError('decode() accepted a bad object update')


def rust_decide_of(r: _vmwatch.Batch) -> dict[str, object]:
    from test_core_properties import as_tuple

    return {
        'version': r.version,
        'signals': [as_tuple(s) for s in r.signals],
        'pending': [(p.moref, p.kind, p.changed) for p in r.pending],
        'skipped': r.skipped,
    }
