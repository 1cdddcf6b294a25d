# SPDX-License-Identifier: Apache-2.0
"""Capture raw WaitForUpdatesEx response bodies from vcsim.

Logs in with pyVmomi, builds the collector / ListView / ContainerView / filter of spec 2.5, then
posts raw `WaitForUpdatesEx` envelopes with the session cookie (as the watcher does) and saves
the response bytes unchanged. Used to (re)generate `tests/data/` and the benchmark payloads.

    python benches/capture.py tests-data --out tests/data
    python benches/capture.py bench --out benches/data [--vms-per-pool 500 --clusters 4]

The `bench` scenario writes pages as vcsim sends them (at most 100 objects each) and
`initial-sync-<n>.xml`, the pages' object sets spliced into one envelope: what real vCenter
returns for a wait without `maxObjectUpdates`.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import re
import ssl
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim, vmodl
from pyVmomi.VmomiSupport import GetVersionNamespace

from vmwatch.devenv import VcsimServer
from vmwatch.settings import DEFAULT_WATCHED_PATHS

PC = vmodl.query.PropertyCollector

ENVELOPE = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"'
    ' xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
    '<soapenv:Body><WaitForUpdatesEx xmlns="urn:vim25">'
    '<_this type="PropertyCollector">{pc}</_this><version>{version}</version>'
    '<options>{options}</options>'
    '</WaitForUpdatesEx></soapenv:Body></soapenv:Envelope>'
)


class Session:
    """A pyVmomi session plus a raw HTTP connection that shares its cookie."""

    def __init__(self, server: VcsimServer) -> None:
        url = urlsplit(server.url)
        assert url.hostname is not None and url.port is not None
        self.host, self.port = url.hostname, url.port
        self.si = SmartConnect(
            host=self.host, port=self.port, user=server.user, pwd=server.password, disableSslCertValidation=True
        )
        self.content = self.si.RetrieveContent()
        stub = self.si._stub
        self.cookie: str = stub.cookie
        self.soap_action = 'urn:' + GetVersionNamespace(stub.version)
        self.ctx = ssl.create_default_context()
        self.ctx.check_hostname = False
        self.ctx.verify_mode = ssl.CERT_NONE

    def close(self) -> None:
        Disconnect(self.si)

    def post(self, body: str, *, cookie: bool = True, timeout_s: float = 300.0) -> bytes:
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=timeout_s)
        headers = {'Content-Type': 'text/xml; charset=utf-8', 'SOAPAction': self.soap_action}
        if cookie:
            headers['Cookie'] = self.cookie
        try:
            conn.request('POST', '/sdk', body=body.encode(), headers=headers)
            return conn.getresponse().read()
        finally:
            conn.close()

    def wait(
        self, pc: Any, version: str, *, max_wait_s: int | None = 0, max_objects: int | None = None, cookie: bool = True
    ) -> bytes:
        options = ''
        if max_wait_s is not None:
            options += f'<maxWaitSeconds>{max_wait_s}</maxWaitSeconds>'
        if max_objects is not None:
            options += f'<maxObjectUpdates>{max_objects}</maxObjectUpdates>'
        return self.post(ENVELOPE.format(pc=pc._moId, version=version, options=options), cookie=cookie)

    def vms(self) -> list[Any]:
        view = self.content.viewManager.CreateContainerView(self.content.rootFolder, [vim.VirtualMachine], True)
        try:
            return sorted(view.view, key=lambda v: v.name)
        finally:
            view.DestroyView()

    def clusters(self) -> list[Any]:
        view = self.content.viewManager.CreateContainerView(self.content.rootFolder, [vim.ClusterComputeResource], True)
        try:
            return sorted(view.view, key=lambda c: c.name)
        finally:
            view.DestroyView()


def create_watch(s: Session, containers: Sequence[Any], paths: Sequence[str] = DEFAULT_WATCHED_PATHS) -> Any:
    """PropertyCollector + ListView of ContainerViews + filter, as spec 2.5."""
    vm = s.content.viewManager
    views = [vm.CreateContainerView(c, [vim.VirtualMachine], True) for c in containers]
    lv = vm.CreateListView(obj=views)
    pc = s.content.propertyCollector.CreatePropertyCollector()
    visit_views = PC.TraversalSpec(name='visitViews', type=vim.view.ContainerView, path='view', skip=False)
    list_view = PC.TraversalSpec(
        type=vim.view.ListView, path='view', skip=False, selectSet=[PC.SelectionSpec(name='visitViews')]
    )
    spec = PC.FilterSpec(
        objectSet=[PC.ObjectSpec(obj=lv, skip=True, selectSet=[list_view, visit_views])],
        propSet=[PC.PropertySpec(type=vim.VirtualMachine, pathSet=list(paths))],
    )
    pc.CreateFilter(spec, partialUpdates=False)
    return pc


VERSION_RE = re.compile(rb'<version>([^<]*)</version>')


def version_of(body: bytes) -> str:
    m = VERSION_RE.search(body)
    return m.group(1).decode() if m else ''


def WaitForTask(task: Any, timeout_s: float = 120.0) -> None:
    """Poll a task to completion (pyVim's helper trips over vcsim's task names)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = task.info.state
        if state == 'success':
            return
        if state == 'error':
            raise RuntimeError(f'task failed: {task.info.error}')
        time.sleep(0.02)
    raise TimeoutError('task did not finish')


def reconfig(vm: Any, extra: dict[str, str]) -> None:
    spec = vim.vm.ConfigSpec(extraConfig=[vim.option.OptionValue(key=k, value=v) for k, v in extra.items()])
    WaitForTask(vm.ReconfigVM_Task(spec))


def wait_changes(s: Session, pc: Any, version: str, settle_s: float = 0.3) -> bytes:
    """The next non-empty response after `version` (vcsim batches changes on a 20 ms ticker)."""
    time.sleep(settle_s)
    return s.wait(pc, version, max_wait_s=5)


@contextmanager
def vcsim(args: Sequence[str]) -> Iterator[VcsimServer]:
    with tempfile.TemporaryDirectory(prefix='vmwatch-capture-') as tmp:
        server = VcsimServer(state_dir=Path(tmp), args=tuple(args)).start(timeout_s=600)
        try:
            yield server
        finally:
            server.stop()


def write(out: Path, name: str, body: bytes, index: dict[str, Any], note: str) -> None:
    (out / name).write_bytes(body)
    index[name] = {'bytes': len(body), 'note': note}
    print(f'{name}: {len(body)} bytes', file=sys.stderr)


def capture_tests(out: Path) -> None:
    """Small captures for tests/data: the watcher tests' topology (spec 6.1)."""
    out.mkdir(parents=True, exist_ok=True)
    index: dict[str, Any] = {}
    with vcsim(['-cluster', '2', '-host', '3', '-standalone-host', '0', '-vm', '2', '-autostart=false']) as server:
        s = Session(server)
        try:
            vms = s.vms()
            c1vm1 = vms[0]
            reconfig(
                c1vm1,
                {
                    'vmservice.namespacedName': 'my-namespace-1/my-name-1',
                    'guestinfo.userdata': 'I2Nsb3VkLWNvbmZpZw==',
                    'guestinfo.userdata.encoding': 'base64',
                    'vmware.tools.internalversion': '12345',
                },
            )
            pc = create_watch(s, s.clusters())
            body = s.wait(pc, '')
            write(out, 'initial-sync.xml', body, index, 'version "" on 4 VMs, all 31 default paths; c1vm1 named')
            version = version_of(body)
            reconfig(c1vm1, {'guestinfo.fromTheGuest': '1.2.3.4', 'ignoredKey1': 'fake'})
            body = wait_changes(s, pc, version)
            write(out, 'extraconfig-modify.xml', body, index, 'c1vm1: guestinfo.fromTheGuest + ignoredKey1 added')
            version = version_of(body) or version
            reconfig(c1vm1, {'vmware.tools.internalversion': '67890'})
            body = wait_changes(s, pc, version)
            write(out, 'extraconfig-ignored-only.xml', body, index, 'c1vm1: only an ignored key changed')
            version = version_of(body) or version
            reconfig(c1vm1, {'guestinfo.fromTheGuest': ''})
            body = wait_changes(s, pc, version)
            write(out, 'extraconfig-remove.xml', body, index, 'c1vm1: guestinfo.fromTheGuest removed')
            version = version_of(body) or version
            WaitForTask(c1vm1.PowerOnVM_Task())
            body = wait_changes(s, pc, version)
            write(out, 'power-on.xml', body, index, 'c1vm1 powered on')
            version = version_of(body) or version
            WaitForTask(c1vm1.CreateSnapshot_Task(name='snap-1', memory=False, quiesce=False))
            body = wait_changes(s, pc, version)
            write(out, 'snapshot.xml', body, index, 'c1vm1: snapshot snap-1 created')
            version = version_of(body) or version
            victim = vms[1]  # powered off (-autostart=false)
            WaitForTask(victim.Destroy_Task())
            body = wait_changes(s, pc, version)
            write(out, 'destroy.xml', body, index, f'{victim._moId} destroyed (leave)')
            version = version_of(body) or version
            body = s.wait(pc, version, max_wait_s=1)
            write(out, 'heartbeat.xml', body, index, 'nothing changed within maxWaitSeconds=1')
            body = s.wait(pc, version, max_wait_s=0, cookie=False)
            write(out, 'fault-not-authenticated.xml', body, index, 'no session cookie: NotAuthenticated fault')
            body = canceled_wait(s, pc, version)
            write(out, 'fault-request-canceled.xml', body, index, 'CancelWaitForUpdates during a wait')
            pc2 = create_watch(s, s.clusters())
            body = s.wait(pc2, '', max_objects=2)
            write(out, 'truncated.xml', body, index, 'maxObjectUpdates=2: truncated page')
        finally:
            s.close()
    (out / 'captures.json').write_text(json.dumps(index, indent=2, sort_keys=True) + '\n')


def canceled_wait(s: Session, pc: Any, version: str) -> bytes:
    result: list[bytes] = []
    t = threading.Thread(target=lambda: result.append(s.wait(pc, version, max_wait_s=30)))
    t.start()
    time.sleep(0.5)
    pc.CancelWaitForUpdates()
    t.join(60)
    return result[0] if result else b''


def big_extra_config(i: int, keys: int) -> dict[str, str]:
    extra = {f'guestinfo.app.setting{k:03d}': f'value-{i}-{k}-' + 'x' * 40 for k in range(keys)}
    extra['vmservice.namespacedName'] = f'ns-{i % 50}/vm-{i}'
    extra['guestinfo.userdata'] = ('I2Nsb3VkLWNvbmZpZwp1c2VyczoKICAtIG5hbWU6IGFkbWlu' * 20)[: 700 + i % 100]
    extra['vmware.tools.internalversion'] = str(12000 + i)
    return extra


def splice(pages: Sequence[bytes]) -> bytes:
    """One envelope holding every page's objectSets (pages come from one filter)."""
    pages = [p for p in pages if b'<objectSet>' in p]
    first = pages[0]
    head_end = first.index(b'<objectSet>')
    tail_start = first.rindex(b'</objectSet>') + len(b'</objectSet>')
    parts = [first[:head_end]]
    for p in pages:
        a = p.index(b'<objectSet>')
        b = p.rindex(b'</objectSet>') + len(b'</objectSet>')
        parts.append(p[a:b])
    tail = first[tail_start:].replace(b'<truncated>true</truncated>', b'<truncated>false</truncated>')
    parts.append(tail)
    return b''.join(parts)


def sync_pages(s: Session, pc: Any) -> list[bytes]:
    pages = [s.wait(pc, '')]
    while b'<truncated>true</truncated>' in pages[-1]:
        pages.append(s.wait(pc, version_of(pages[-1]), max_wait_s=5))
    return [p for p in pages if b'<objectSet>' in p]


def run_parallel(fn: Callable[[Any], None], items: Sequence[Any], workers: int = 8) -> None:
    with ThreadPoolExecutor(workers) as ex:
        list(ex.map(fn, items))


def capture_bench(out: Path, *, clusters: int, vms_per_pool: int, extra_keys: int, parts: Sequence[str]) -> None:
    """Benchmark payloads: initial syncs (plain, big extraConfig) and 100-VM change batches."""
    out.mkdir(parents=True, exist_ok=True)
    index_path = out / 'captures.json'
    index: dict[str, Any] = json.loads(index_path.read_text()) if index_path.exists() else {}
    written: list[str] = []
    if 'initial' in parts:
        written += capture_initial(out, index, clusters=clusters, vms_per_pool=vms_per_pool, extra_keys=extra_keys)
    if 'batches' in parts:
        written += capture_batches(out, index, extra_keys=extra_keys)
    for name in written:
        raw = (out / name).read_bytes()
        gz = gzip.compress(raw, 9)
        (out / name).unlink()
        (out / (name + '.gz')).write_bytes(gz)
        index[name + '.gz'] = {**index.pop(name), 'gz_bytes': len(gz)}
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + '\n')


def capture_initial(
    out: Path, index: dict[str, Any], *, clusters: int, vms_per_pool: int, extra_keys: int
) -> list[str]:
    args = ['-cluster', str(clusters), '-host', '2', '-standalone-host', '0', '-vm', str(vms_per_pool)]
    names = []
    with vcsim([*args, '-autostart=false']) as server:
        s = Session(server)
        try:
            vms = s.vms()
            n = len(vms)
            pc = create_watch(s, s.clusters())
            pages = sync_pages(s, pc)
            name = f'initial-sync-{n}.xml'
            write(out, name, splice(pages), index, f'{n} VMs, default paths, spliced from {len(pages)} pages')
            names.append(name)
            pc.Destroy()
            run_parallel(lambda iv: reconfig(iv[1], big_extra_config(iv[0], extra_keys)), list(enumerate(vms)))
            pc = create_watch(s, s.clusters())
            pages = sync_pages(s, pc)
            name = f'initial-sync-{n}-extraconfig.xml'
            write(out, name, splice(pages), index, f'{n} VMs with {extra_keys + 3} extraConfig keys each')
            names.append(name)
        finally:
            s.close()
    return names


def capture_batches(out: Path, index: dict[str, Any], *, extra_keys: int) -> list[str]:
    """100 VMs with big extraConfig: one batch each of extraConfig edits, power on, power off."""
    names = []
    with vcsim(['-cluster', '1', '-host', '2', '-standalone-host', '0', '-vm', '100', '-autostart=false']) as server:
        s = Session(server)
        try:
            vms = s.vms()
            run_parallel(lambda iv: reconfig(iv[1], big_extra_config(iv[0], extra_keys)), list(enumerate(vms)))
            pc = create_watch(s, s.clusters())
            pages = sync_pages(s, pc)
            version = version_of(s.wait(pc, version_of(pages[-1]), max_wait_s=1)) or version_of(pages[-1])
            steps: list[tuple[str, Callable[[Any], None], str]] = [
                (
                    'extraconfig-modify-100.xml',
                    lambda vm: reconfig(vm, {'guestinfo.app.setting000': 'changed', 'guestinfo.ip': '10.0.0.1'}),
                    '100 VMs: two extraConfig keys changed',
                ),
                ('power-on-100.xml', lambda vm: WaitForTask(vm.PowerOnVM_Task()), '100 VMs powered on'),
                ('power-off-100.xml', lambda vm: WaitForTask(vm.PowerOffVM_Task()), '100 VMs powered off'),
            ]
            for name, action, note in steps:
                # vcsim's collector slows down sharply with many pending objects: change the VMs
                # ten at a time and collect each group's response, then splice them.
                pages: list[bytes] = []
                for i in range(0, len(vms), 10):
                    group = vms[i : i + 10]
                    for vm in group:
                        action(vm)
                    got = collect_changes(s, pc, version, len(group))
                    pages += got
                    version = version_of(got[-1]) if got and version_of(got[-1]) else version
                write(out, name, splice(pages), index, note + f' ({len(pages)} responses spliced)')
                names.append(name)
        finally:
            s.close()
    return names


def collect_changes(s: Session, pc: Any, version: str, objects: int, deadline_s: float = 600.0) -> list[bytes]:
    """Responses until `objects` object updates arrived (vcsim spreads them over several)."""
    pages: list[bytes] = []
    seen = 0
    deadline = time.monotonic() + deadline_s
    while seen < objects and time.monotonic() < deadline:
        body = s.wait(pc, version, max_wait_s=5)
        version = version_of(body) or version
        if b'<objectSet>' in body:
            pages.append(body)
            seen += body.count(b'<objectSet>')
    return pages


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('scenario', choices=['tests-data', 'bench'])
    ap.add_argument('--out', type=Path, required=True)
    ap.add_argument('--clusters', type=int, default=4)
    ap.add_argument('--vms-per-pool', type=int, default=500)
    ap.add_argument('--extra-keys', type=int, default=40)
    ap.add_argument('--parts', default='initial,batches', help='bench: comma-separated parts to capture')
    a = ap.parse_args(argv)
    if a.scenario == 'tests-data':
        capture_tests(a.out)
    else:
        parts = a.parts.split(',')
        capture_bench(a.out, clusters=a.clusters, vms_per_pool=a.vms_per_pool, extra_keys=a.extra_keys, parts=parts)
    return 0


if __name__ == '__main__':
    sys.exit(main())
