# SPDX-License-Identifier: Apache-2.0
"""List + watch of one Kubernetes collection in a background thread, decoded with orjson from the raw stream.

The reusable half of an informer: the subclass (or the `handler`) decides what a complete list and a
watch event mean. Semantics:

* The first list is paginated; the watch starts from its resourceVersion with bookmarks.
* 410 Gone (on the request or as an ERROR event) -> relist; the handler gets the complete list again and
  must treat objects it holds but the list lacks as deleted.
* Other failures (apiserver restarted, connection reset, read timeout) -> resume from the last applied
  resourceVersion after a capped exponential backoff with jitter.
* `wait_synced()` returns once the first list is applied; `wait_for_resource_version(rv)` once an event
  or bookmark at or beyond `rv` was applied (tests wait on it instead of sleeping).
* One bad object never stops the feed: an object the handler cannot use (a missing name, a field of an
  unexpected type, a value out of range) is skipped or clamped by the handler and reported to
  `bad_objects` (counted by reason, logged once per object and reason); a handler that raises on an event
  has that event skipped and reported the same way, and the watch goes on.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

import orjson

__all__ = ['BadObjects', 'Gone', 'ListWatch', 'ListWatchStats', 'StreamError', 'object_name']

log = logging.getLogger(__name__)


class Gone(Exception):
    """The resourceVersion is too old (HTTP 410): relist."""


class StreamError(Exception):
    """The apiserver answered with an error status, or an ERROR event that is not 410."""


class TooLarge(StreamError):
    """A watch event longer than the cap: the watch cannot resume past it, so the next attempt relists."""


MAX_EVENT_BYTES = 64 << 20
"""Longest watch event line read (bytes). An object is at most ~1.5 MiB in etcd (its default request limit), so a
longer line is not a Kubernetes object: the watch is dropped and restarted rather than memory grown without bound."""
MAX_PAGE_BYTES = 512 << 20
"""Largest list page read (bytes): `page_size` objects of ~1.5 MiB at most; a larger body fails the list (retried)."""


class ListWatchStats:
    """Counters for metrics and tests."""

    __slots__ = ('errors', 'events', 'lists', 'relists_gone')

    def __init__(self) -> None:
        self.lists = 0  # complete lists applied (the first one and every relist)
        self.relists_gone = 0  # relists caused by 410 Gone
        self.events = 0  # watch events applied (bookmarks included)
        self.errors = 0  # failed list/watch attempts (retried)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


def object_name(obj: Any) -> str:
    """'namespace/name' of a raw object for log lines (bounded, whatever its shape)."""
    metadata = obj.get('metadata') if isinstance(obj, Mapping) else None
    if not isinstance(metadata, Mapping):
        return '<no metadata>'
    namespace, name = metadata.get('namespace', ''), metadata.get('name', '')
    return f'{str(namespace)[:100]}/{str(name)[:100]}'


class BadObjects:
    """Objects a feed could not take as they are (skipped or clamped): counted by reason, logged once each.

    `report(name, reason, detail)` counts every occurrence (`counts`, and `on_bad(reason)` when set: the
    metric) and logs a warning the first time an object shows a reason. The set of (object, reason) pairs
    already logged holds at most `remember` entries; when full it starts over (one more line per object).
    """

    REMEMBER: Final = 10_000

    def __init__(self, what: str, *, remember: int = REMEMBER) -> None:
        self.what = what
        self.counts: Counter[str] = Counter()
        self.on_bad: Callable[[str], None] | None = None
        self._logged: set[tuple[str, str]] = set()
        self._remember = remember
        self._lock = threading.Lock()

    def report(self, name: str, reason: str, detail: str) -> None:
        with self._lock:
            self.counts[reason] += 1
            first = (name, reason) not in self._logged
            if first:
                if len(self._logged) >= self._remember:
                    self._logged.clear()
                self._logged.add((name, reason))
        if self.on_bad is not None:
            self.on_bad(reason)
        if first:
            log.warning('%s %s: %s (%s); the rest of the feed goes on', self.what, name, detail[:200], reason)


class ListWatch:
    """Lists and watches `path` (e.g. '/apis/g/v/plural', all namespaces) and calls the hooks below.

    `api` is a `kubernetes.client.ApiClient`; only its REST layer is used, with raw responses.
    Subclasses implement `on_list(items, resource_version)` and `on_event(kind, obj)`.
    """

    thread_name = 'vmwatch-listwatch'

    def __init__(
        self,
        api: Any,
        path: str,
        *,
        page_size: int = 500,
        watch_timeout_s: int = 300,
        connect_timeout_s: float = 10.0,
        backoff_max_s: float = 30.0,
        max_event_bytes: int = MAX_EVENT_BYTES,
        max_page_bytes: int = MAX_PAGE_BYTES,
    ) -> None:
        self.api = api
        self.max_event_bytes = max_event_bytes
        self.max_page_bytes = max_page_bytes
        self.path = path
        self.page_size = page_size
        self.watch_timeout_s = watch_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.backoff_max_s = backoff_max_s
        self.stats = ListWatchStats()
        self.bad_objects = BadObjects(path)
        self.last_error: BaseException | None = None  # the last list/watch failure (it was retried)
        self._rv = 0  # last applied resourceVersion, as an int (etcd3 revisions)
        self._rv_str = ''
        self._cond = threading.Condition()
        self._synced = threading.Event()
        self._stop = threading.Event()
        self._relist = threading.Event()  # request_relist(): list again instead of resuming the watch
        self._response: Any = None  # the open watch response, closed by stop()
        self._thread: threading.Thread | None = None

    # -- hooks ------------------------------------------------------------------------------------------
    def on_list(self, items: list[dict[str, Any]], resource_version: str) -> None:
        raise NotImplementedError

    def on_event(self, kind: str, obj: dict[str, Any]) -> None:
        raise NotImplementedError

    # -- lifecycle --------------------------------------------------------------------------------------
    def start(self) -> ListWatch:
        if self._thread is not None:
            raise RuntimeError('already started')
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self, *, timeout_s: float = 10.0) -> None:
        """Stop the thread (idempotent); the open watch response is shut down to unblock it."""
        self._stop.set()
        response = self._response
        if response is not None:
            self._close(response)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)
        with self._cond:
            self._cond.notify_all()

    def request_relist(self) -> None:
        """List everything again soon (what the handler derives from the objects changed): the open watch is
        closed and the next list replaces the state, as after a 410."""
        self._relist.set()
        response = self._response
        if response is not None:
            self._close(response)

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    @property
    def resource_version(self) -> str:
        return self._rv_str

    def wait_synced(self, timeout_s: float | None = None) -> bool:
        return self._synced.wait(timeout_s)

    def wait_for_resource_version(self, resource_version: str, timeout_s: float | None = None) -> bool:
        """Wait until a change or bookmark at or beyond `resource_version` was applied.

        resourceVersions compare as integers with kube-apiserver's etcd3 storage (the API calls them
        opaque: use this for tests and health checks, not for correctness).
        """
        target = int(resource_version)
        with self._cond:
            self._cond.wait_for(lambda: self._rv >= target or self._stop.is_set(), timeout_s)
            return self._rv >= target

    # -- applying ---------------------------------------------------------------------------------------
    def apply_event(self, event: Mapping[str, Any]) -> None:
        """Apply one decoded watch event. Raises Gone on a 410 ERROR event."""
        kind = event.get('type')
        obj = event.get('object')
        if not isinstance(obj, dict) or not isinstance(kind, str):
            raise StreamError(f'malformed watch event: {str(event)[:200]}')
        if kind == 'ERROR':
            if obj.get('code') == 410:
                raise Gone(obj.get('message', 'resourceVersion too old'))
            raise StreamError(f'watch ERROR event: {obj.get("code")} {obj.get("reason")}: {obj.get("message")}')
        if kind in ('ADDED', 'MODIFIED', 'DELETED'):
            try:
                self.on_event(kind, obj)
            except Exception as exc:  # one object the handler chokes on must not stop the watch
                self.bad_objects.report(
                    object_name(obj), 'error', f'{kind} event not applied: {type(exc).__name__}: {exc}'
                )
        elif kind != 'BOOKMARK':
            log.warning('%s: ignoring watch event of unknown type %r', self.path, kind)
        self.stats.events += 1
        metadata = obj.get('metadata')
        resource_version = metadata.get('resourceVersion') if isinstance(metadata, dict) else None
        self._applied(resource_version if isinstance(resource_version, str) else '')

    def apply_list(self, items: list[dict[str, Any]], resource_version: str) -> None:
        self.on_list(items, resource_version)
        self.stats.lists += 1
        self._applied(resource_version, force=True)
        self._synced.set()

    def _applied(self, resource_version: str, *, force: bool = False) -> None:
        if not resource_version:
            return
        try:
            number = int(resource_version)
        except ValueError:
            number = self._rv
        with self._cond:
            if force or number >= self._rv:
                self._rv, self._rv_str = number, resource_version
            self._cond.notify_all()

    # -- the thread -------------------------------------------------------------------------------------
    def _run(self) -> None:
        resource_version: str | None = None
        failures = 0
        while not self._stop.is_set():
            try:
                if resource_version is None or self._relist.is_set():
                    self._relist.clear()  # a request arriving during this list lists again after it
                    resource_version = self._list()
                    if self._relist.is_set():
                        continue
                resource_version = self._watch(resource_version)
                failures = 0
            except Gone as exc:
                log.info('watch of %s expired (%s): relisting', self.path, exc)
                self.stats.relists_gone += 1
                resource_version = None
            except Exception as exc:
                if self._stop.is_set():
                    break
                if self._relist.is_set():  # the watch was closed to relist: not a failure
                    continue
                self.stats.errors += 1
                self.last_error = exc
                if isinstance(exc, TooLarge):
                    resource_version = None  # resuming would send the same event again
                delay = min(self.backoff_max_s, 0.2 * 2**failures) * random.uniform(0.5, 1.0)
                failures = min(failures + 1, 20)
                log.warning('list/watch of %s failed (%s); retrying in %.1f s', self.path, exc, delay)
                self._stop.wait(delay)

    def _list(self) -> str:
        items: list[dict[str, Any]] = []
        cont = ''
        while True:
            query: list[tuple[str, Any]] = [('limit', self.page_size)]
            if cont:
                query.append(('continue', cont))
            response = self._request(query, read_timeout_s=60.0)
            try:
                body = response.read(self.max_page_bytes + 1)
                if len(body) > self.max_page_bytes:
                    raise StreamError(f'list {self.path}: a page over {self.max_page_bytes} bytes: not read')
            finally:
                response.release_conn()
            if response.status == 410 and cont:
                items, cont = [], ''  # the continue token expired: list again from the start
                continue
            if response.status == 404:
                raise StreamError(
                    f'list {self.path}: HTTP 404: not served (is its CustomResourceDefinition installed?)'
                )
            if response.status != 200:
                raise StreamError(f'list {self.path}: HTTP {response.status}: {body[:200]!r}')
            page = orjson.loads(body)
            items.extend(page.get('items') or ())
            metadata = page.get('metadata') or {}
            cont = metadata.get('continue') or ''
            if not cont:
                resource_version: str = metadata.get('resourceVersion', '')
                self.apply_list(items, resource_version)
                return resource_version

    def _watch(self, resource_version: str) -> str:
        """Watch from `resource_version` until the server ends the stream; returns the last applied one."""
        query = [
            ('watch', 'true'),
            ('resourceVersion', resource_version),
            ('allowWatchBookmarks', 'true'),
            ('timeoutSeconds', self.watch_timeout_s),
        ]
        response = self._request(query, read_timeout_s=self.watch_timeout_s + 30.0)
        self._response = response
        try:
            if self._stop.is_set() or self._relist.is_set():
                return resource_version
            if response.status == 410:
                raise Gone('HTTP 410 on the watch request')
            if response.status != 200:
                raise StreamError(f'watch {self.path}: HTTP {response.status}: {response.read()[:200]!r}')
            for line in self._lines(response):
                self.apply_event(orjson.loads(line))
            return self._rv_str or resource_version
        finally:
            self._response = None
            self._close(response)

    def _lines(self, response: Any) -> Iterator[bytes]:
        """The stream's lines (one watch event each), refusing one longer than `max_event_bytes`."""
        buffer = bytearray()
        for chunk in response.stream(65536):
            if self._stop.is_set() or self._relist.is_set():
                return
            end = chunk.rfind(b'\n')
            if end < 0:
                buffer += chunk
                self._check_line(len(buffer))
                continue
            buffer += chunk[:end]
            lines = bytes(buffer).split(b'\n')
            buffer = bytearray(chunk[end + 1 :])
            for line in lines:
                self._check_line(len(line))
                if line.strip():
                    yield line
            self._check_line(len(buffer))
        if buffer.strip():
            yield bytes(buffer)

    def _check_line(self, n: int) -> None:
        if n > self.max_event_bytes:
            raise TooLarge(f'watch {self.path}: an event over {self.max_event_bytes} bytes: relisting')

    def _request(self, query: list[tuple[str, Any]], *, read_timeout_s: float) -> Any:
        """GET the collection with raw (not deserialised) results; returns the urllib3 response."""
        timeout = (self.connect_timeout_s, read_timeout_s)
        headers = {'Accept': 'application/json'}
        method, url, header_params, _body, _post = self.api.param_serialize(
            'GET', self.path, query_params=query, header_params=headers, auth_settings=['BearerToken']
        )
        return self.api.call_api(method, url, header_params=header_params, _request_timeout=timeout).response

    @staticmethod
    def _close(response: Any) -> None:
        try:
            shutdown = getattr(response, 'shutdown', None)  # urllib3 >= 2.3 unblocks a pending read
            if shutdown is not None:
                shutdown()
            response.close()
            response.release_conn()
        except Exception:  # closing a dead socket is not an error worth reporting
            log.debug('closing a watch response failed', exc_info=True)
