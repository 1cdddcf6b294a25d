# SPDX-License-Identifier: Apache-2.0
"""Managed object references as plain values ('Folder:group-v3'), free of pyVmomi."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ['MoRef', 'RefLike']


@dataclass(frozen=True, order=True)
class MoRef:
    """A managed object reference: its vSphere type name and its value, e.g. MoRef('Folder', 'group-v3')."""

    type: str
    value: str

    def __post_init__(self) -> None:
        if not self.type or not self.value or ':' in self.type:
            raise ValueError(f'not a managed object reference: {self.type!r}, {self.value!r}')

    @classmethod
    def parse(cls, ref: RefLike) -> MoRef:
        """'Folder:group-v3' (or a MoRef) -> MoRef('Folder', 'group-v3')."""
        if isinstance(ref, MoRef):
            return ref
        kind, sep, value = ref.partition(':')
        if not sep or not kind or not value:
            raise ValueError(f'{ref!r} is not a managed object reference (expected TYPE:VALUE, e.g. Folder:group-v3)')
        return cls(kind, value)

    def __str__(self) -> str:
        return f'{self.type}:{self.value}'


RefLike = MoRef | str
