# SPDX-License-Identifier: Apache-2.0
"""Hypothesis properties of the Rust uniqueID index (`_vmwatch.Index`).

A state machine runs random upserts, deletes, lookups and clears against the index and a plain dict
model, and compares every answer: `get`, `by_unique_id` (an answer only when exactly one VM claims the
uniqueID), `len`, and `bytes()` (positive while anything is stored, zero after `clear`). Names and
namespaces come from a small pool, so overwrites, uniqueID changes, slot reuse and namespaces emptied
and re-created all occur.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from vmwatch import _vmwatch

NAMESPACES = st.sampled_from(['ns-1', 'ns-2', 'default', '', 'ünï'])
NAMES = st.one_of(st.sampled_from([f'vm-{i}' for i in range(6)]), st.text(max_size=80))
UIDS = st.one_of(st.sampled_from(['', 'vm-1', 'vm-2', 'vm-3']), st.text(max_size=40))

Model = dict[tuple[str, str], tuple[str, bool, int]]


def claimant(model: Model, uid: str) -> tuple[str, str] | None:
    hits = [k for k, v in model.items() if uid and v[0] == uid]
    return hits[0] if len(hits) == 1 else None


class IndexMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ix = _vmwatch.Index()
        self.model: Model = {}

    @rule(ns=NAMESPACES, name=NAMES, uid=UIDS, deleting=st.booleans(), priority=st.integers(-(2**31), 2**31 - 1))
    def upsert(self, ns: str, name: str, uid: str, deleting: bool, priority: int) -> None:
        self.ix.upsert(ns, name, unique_id=uid, deleting=deleting, priority=priority)
        self.model[ns, name] = (uid, deleting, priority)

    @rule(ns=NAMESPACES, name=NAMES)
    def delete(self, ns: str, name: str) -> None:
        assert self.ix.delete(ns, name) == (self.model.pop((ns, name), None) is not None)

    @rule(ns=NAMESPACES, name=NAMES)
    def get(self, ns: str, name: str) -> None:
        assert self.ix.get(ns, name) == self.model.get((ns, name))

    @rule(uid=UIDS)
    def by_unique_id(self, uid: str) -> None:
        assert self.ix.by_unique_id(uid) == claimant(self.model, uid)

    @rule()
    def clear(self) -> None:
        self.ix.clear()
        self.model.clear()
        assert self.ix.bytes() == 0  # clear gives the memory back

    @invariant()
    def agrees(self) -> None:
        assert len(self.ix) == len(self.model)
        if self.model:
            assert self.ix.bytes() > 0
        for (ns, name), state in self.model.items():
            assert self.ix.get(ns, name) == state
            assert self.ix.by_unique_id(state[0]) == claimant(self.model, state[0])


TestIndexMachine = IndexMachine.TestCase
TestIndexMachine.settings = settings(max_examples=150, stateful_step_count=50, deadline=None)
