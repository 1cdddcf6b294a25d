# SPDX-License-Identifier: Apache-2.0
"""Test-side helpers for the watcher scenarios: drive vcsim's inventory (pyVmomi, in threads).

No tests here; the scenario modules import it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from vmwatch.devenv import VcsimServer
from vmwatch.vsphere import Endpoint, MoRef, Session
from vmwatch.vsphere._pyvmomi import vim
from vmwatch.watcher import Watcher

ALIASES = {
    'c1vm1': 'DC0_C0_RP0_VM0',
    'c1vm2': 'DC0_C0_RP0_VM1',
    'c2vm1': 'DC0_C1_RP0_VM0',
    'c2vm2': 'DC0_C1_RP0_VM1',
}


def wait_task(task: Any, timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while (state := task.info.state) not in ('success', 'error'):
        if time.monotonic() > deadline:
            raise TimeoutError(f'{task} still {state}')
        time.sleep(0.01)
    if state == 'error':
        raise task.info.error
    return task.info.result


def extra_config(**values: str) -> Any:
    return vim.vm.ConfigSpec(extraConfig=[vim.option.OptionValue(key=k, value=v) for k, v in values.items()])


@dataclass
class Sim:
    """A logged-in test client of one vcsim, with the spec 6.1 names for its clusters and VMs."""

    server: VcsimServer
    endpoint: Endpoint
    session: Session
    clusters: list[Any]
    vms: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def connect(cls, server: VcsimServer) -> Sim:
        ep = Endpoint(url=server.url, user=server.user, password_file=server.password_file, ca_file=server.ca_file)
        session = Session(ep)
        session.login()
        content = session.content
        dc = content.rootFolder.childEntity[0]
        clusters = sorted(dc.hostFolder.childEntity, key=lambda c: c.name)
        sim = cls(server=server, endpoint=ep, session=session, clusters=clusters)
        sim.refresh()
        return sim

    def refresh(self) -> None:
        content = self.session.content
        view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
        self.vms = {vm.name: vm for vm in view.view}
        view.DestroyView()

    def close(self) -> None:
        self.session.logout()

    @property
    def c1(self) -> MoRef:
        return MoRef('ClusterComputeResource', self.clusters[0]._moId)

    @property
    def c2(self) -> MoRef:
        return MoRef('ClusterComputeResource', self.clusters[1]._moId)

    def vm(self, alias: str) -> Any:
        return self.vms[ALIASES.get(alias, alias)]

    def moref(self, alias: str) -> str:
        return str(self.vm(alias)._moId)

    # -- changes (async: they run in a thread so the watcher keeps going) --------------------------------------

    async def run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    async def reconfigure(self, alias: str, **values: str) -> None:
        await self.run(lambda: wait_task(self.vm(alias).ReconfigVM_Task(extra_config(**values))))

    async def name(self, alias: str, namespace: str, name: str) -> None:
        await self.reconfigure(alias, **{'vmservice.namespacedName': f'{namespace}/{name}'})

    async def power_on(self, alias: str) -> None:
        await self.run(lambda: wait_task(self.vm(alias).PowerOnVM_Task()))

    async def snapshot(self, alias: str, name: str) -> None:
        await self.run(lambda: wait_task(self.vm(alias).CreateSnapshot_Task(name, '', False, False)))

    async def revert(self, alias: str, name: str) -> None:
        def revert() -> None:
            def find(trees: Iterable[Any]) -> Any:
                for t in trees or ():
                    if t.name == name:
                        return t.snapshot
                    if (found := find(t.childSnapshotList)) is not None:
                        return found
                return None

            snap = find(self.vm(alias).snapshot.rootSnapshotList)
            wait_task(snap.RevertToSnapshot_Task())

        await self.run(revert)

    async def destroy(self, alias: str) -> None:
        await self.run(lambda: wait_task(self.vm(alias).Destroy_Task()))

    async def move(self, alias: str, folder: Any) -> None:
        await self.run(lambda: wait_task(folder.MoveIntoFolder_Task([self.vm(alias)])))


def signals_of(signals: Iterable[Any]) -> list[tuple[str, str, str, bool]]:
    """(namespace, name, moref, verified) of each signal, in order."""
    return [(s.namespace, s.name, s.moref, s.verified) for s in signals]


async def take(w: Watcher, n: int, *, timeout_s: float = 15.0) -> list[Any]:
    """The next `n` signals (fails after `timeout_s`)."""
    out = []
    async with asyncio.timeout(timeout_s):
        for _ in range(n):
            out.append(await anext(w))
    return out
