# SPDX-License-Identifier: Apache-2.0
"""Type stub of the Rust extension `vmwatch._vmwatch` (the hot path).

Contract between the Rust core (rust/) and the Python side (watcher, service, CLI).
Only bytes, ints, strs, tuples and small frozen classes cross the boundary.
"""

from collections.abc import Iterable, Sequence
from typing import Any, Final, Literal, final

__all__ = [
    '__version__',
    'build_info',
    'KIND_ENTER',
    'KIND_MODIFY',
    'KIND_LEAVE',
    'VmwatchError',
    'DecodeError',
    'VmwatchInternalError',
    'Fault',
    'Signal',
    'Pending',
    'Batch',
    'Index',
    'Decider',
    'decode',
    'parse_namespaced_name',
]

__version__: str
build_info: str

# Change kinds: must match rust/decode.rs KIND_* and vmwatch.types.Kind.
KIND_ENTER: Final[int]  # 0
KIND_MODIFY: Final[int]  # 1
KIND_LEAVE: Final[int]  # 2

class VmwatchError(Exception):
    """Base of every error raised by the extension."""

class DecodeError(VmwatchError, ValueError):
    """A response body that is not a well-formed WaitForUpdatesEx response.

    `offset` is the byte offset in the body where decoding failed.
    """

    offset: int
    def __init__(self, message: str, offset: int = 0, errors: Iterable[dict[str, Any]] = ()) -> None: ...
    def errors(self) -> list[dict[str, Any]]:
        """One record per problem: {'type': slug, 'loc': (moref, path), 'msg': str, 'offset': int}.

        Slugs (stable): xml_syntax, dtd_forbidden, pi_forbidden, unknown_entity, too_deep, too_long,
        too_many_attributes, not_utf8, invalid_char, not_soap, unexpected_element, invalid_value, soap_fault.
        """

class VmwatchInternalError(VmwatchError, RuntimeError):
    """A bug in vmwatch (for example a Rust panic that was caught): please report it."""

@final
class Fault:
    """A SOAP fault returned instead of a WaitForUpdatesExResponse (not an exception: a result)."""

    fault_type: str  # the xsi:type of the fault detail, e.g. 'InvalidCollectorVersion', 'NotAuthenticated'
    message: str  # faultstring

@final
class Signal:
    """One VM that must be reconciled (a real change, or it entered scope unverified)."""

    moref: str  # MoRef value, e.g. 'vm-42'
    kind: int  # KIND_*
    namespace: str
    name: str
    verified: bool  # the index holds namespace/name with status.uniqueID == moref
    deleting: bool  # always False for signals (deleting VMs are skipped), kept for symmetry
    priority: int  # the priority stored in the index for namespace/name (0 when not indexed)
    changed: tuple[str, ...]  # sorted property paths whose fingerprint changed (or were first seen)
    # 'undelivered': the VM re-entered unchanged but the request for its last change never got out
    reason: Literal['changed', 'entered', 'left', 'undelivered']
    digest: int  # the digest of the state this signal is for: Decider.delivered(moref, digest) once delivered

@final
class Pending:
    """A VM whose change is real but whose namespace/name is unknown: step G (name fetch) is needed."""

    moref: str
    kind: int
    changed: tuple[str, ...]

@final
class Batch:
    """The outcome of one WaitForUpdatesEx response body."""

    version: str | None  # None when the response carried no UpdateSet (wait timed out: a heartbeat)
    truncated: bool
    objects: int  # object updates in the body
    kinds: tuple[int, int, int]  # object updates by kind: (enter, modify, leave)
    changes: int  # property changes in the body
    signals: list[Signal]
    pending: list[Pending]
    # reason -> count: 'unchanged', 'deleting', 'verified_enter', 'unmanaged', 'left', and 'delivered' (a first
    # sighting whose state is the one last delivered, per a checkpoint or a record that outlived the cache entry)
    skipped: dict[str, int]
    missing: list[tuple[str, str, str]]  # missingSet entries: (moref, path, fault type)
    bad: tuple[tuple[str | None, int, str, str], ...]
    """Object updates skipped because they could not be decoded (spec 7.2 #3), in document order:
    (moref, or None when the error came before the `obj`; byte offset; error type slug, as
    DecodeError.errors()[i]['type']; message, quoting at most ~200 bytes of the input). Their VMs
    were forgotten by the fingerprint cache, so their next good update signals."""

@final
class Index:
    """Concurrent index of Kubernetes VirtualMachines: (namespace, name) -> state, and uniqueID -> (ns, name).

    Safe to share between threads; read by `Decider.decide` with the GIL released.
    """

    def __init__(self) -> None: ...
    def upsert(self, namespace: str, name: str, *, unique_id: str, deleting: bool, priority: int) -> None: ...
    def delete(self, namespace: str, name: str) -> bool: ...
    def get(self, namespace: str, name: str) -> tuple[str, bool, int] | None:
        """(unique_id, deleting, priority) or None."""
    def by_unique_id(self, unique_id: str) -> tuple[str, str] | None:
        """(namespace, name) when exactly one VM has this status.uniqueID, else None."""
    def keys(self) -> list[tuple[str, str]]:
        """Every indexed VM as (namespace, name)."""
    def clear(self) -> None: ...
    def __len__(self) -> int: ...
    def bytes(self) -> int:
        """Approximate heap bytes held by the index."""

@final
class Decider:
    """Stateful per-process decision core: ignore set, fingerprint cache (LRU + TTL), negative name cache."""

    def __new__(
        cls,
        *,
        index: Index,
        watched_paths: Sequence[str],
        ignored_keys: Iterable[str],
        name_key: str = 'vmservice.namespacedName',
        cache_max_entries: int = 25000,
        cache_ttl_s: float = 86400.0,
        signal_on_leave: bool = False,
    ) -> Decider: ...
    def decide(self, body: bytes) -> Batch | Fault:
        """Decode one raw WaitForUpdatesEx response body and decide (spec section 3, steps A-F).

        The GIL is released while decoding and deciding. Raises DecodeError for malformed input.
        """
    def resolve(self, moref: str, kind: int, changed: Sequence[str], namespace: str, name: str) -> Signal | None:
        """Finish a Pending after the name fetch (step G): index lookup, steps E/F, H.

        Empty namespace/name records the VM in the negative cache (cleared when its extraConfig changes).
        """
    def forget(self, moref: str) -> None:
        """Evict the VM's fingerprints and negative-cache entry; its request counts as not delivered."""
    def delivered(self, moref: str, digest: int) -> None:
        """The request for `Signal.digest` of `moref` was delivered (or needed no delivery)."""
    def load_checkpoint(self, blob: bytes) -> int:
        """Merge delivery records (16 bytes each, as `checkpoint()` writes them); returns how many.

        Raises ValueError (loading nothing) if the length is not a multiple of 16.
        """
    def checkpoint(self) -> bytes:
        """Every delivery record: (xxh3-64 of the MoRef, digest), sorted, little-endian, 16 bytes each."""
    def end_initial_sync(self) -> int:
        """A complete initial sync is over: drop loaded records of VMs it did not see; returns how many."""
    def purge(self) -> None: ...
    def cache_stats(self) -> dict[str, int]:
        """added, evicted, expired, hits, misses, items, bytes, negative, records, records_bytes."""

def decode(
    body: bytes, *, ignored_keys: Iterable[str] | None = None, name_key: str = 'vmservice.namespacedName'
) -> tuple[str | None, bool, list[tuple[str, str, int, tuple[str, ...], tuple[str, ...] | None, str | None]]]:
    """Stateless decode for `vmwatch decode`.

    Returns (version, truncated, updates); each update is
    (moref, type, kind, sorted changed paths, sorted kept extraConfig keys or None, 'ns/name' or None).
    ignored_keys=None keeps every key (--no-filter). Strict, unlike Decider.decide: the first bad object update
    raises DecodeError (file contract of `vmwatch decode`); a SOAP fault raises DecodeError with type 'soap_fault'.
    """

def parse_namespaced_name(value: str) -> tuple[str, str] | None:
    """'ns/name' -> (ns, name); anything that is not exactly two non-empty parts -> None."""
