# SPDX-License-Identifier: Apache-2.0
"""A fleet of VMs watched by a real Service, and the few fault primitives the reliability tests share."""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from service_env import ServiceEnv, until

from vmwatch.devenv import VcsimServer
from vmwatch.vsphere import MoRef, Session
from vmwatch.vsphere import inventory as inv
from vmwatch.vsphere._pyvmomi import vim

if TYPE_CHECKING:
    from conftest import Recorder


# one cluster with one host (placement never differs), N VMs, all in the datacenter's root VM folder, which
# keeps its MoRef across a vcsim restart, as do the VMs (the model is rebuilt in the same order)
def topology(vms: int) -> tuple[str, ...]:
    return ('-cluster', '1', '-host', '1', '-standalone-host', '0', '-vm', str(vms), '-autostart=false')


WATCHED_KEY = 'guestinfo.reliability'  # not in the ignore set: a watched change
IGNORED_KEY = 'vmware.tools.internalversion'  # in the ignore set (settings.py): never a signal by itself


@dataclass(kw_only=True)
class ChangeStream:
    """Watched changes (WATCHED_KEY set to a new value) made on demand or by a thread: VM name -> the times (Unix)
    of its changes. Subclasses say how a VM's value is written (`write`)."""

    at: dict[str, list[float]] = field(default_factory=dict)
    counter: int = 0
    token: str = field(default_factory=lambda: uuid.uuid4().hex[:8])  # vcsims may outlive a test: new values
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def write(self, name: str, value: str) -> None:
        raise NotImplementedError

    def change(self, name: str) -> None:
        self.counter += 1
        self.at.setdefault(name, []).append(time.time())
        self.write(name, f'{self.token}-{self.counter}')

    def start(self, seed: int, names: list[str], period_s: float = 0.1) -> None:
        rng = random.Random(seed)

        def loop() -> None:
            while not self._stop.wait(period_s):
                self.change(rng.choice(names))

        self._stop.clear()
        self._thread = threading.Thread(target=loop, name='changes', daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


@dataclass
class Fleet:
    env: ServiceEnv
    folder: MoRef
    vms: dict[str, MoRef]  # Kubernetes name -> vSphere VM
    counter: int = 0
    changed_at: dict[str, int] = field(default_factory=dict)  # name -> len(received) before its last change

    @property
    def names(self) -> list[str]:
        return sorted(self.vms)

    async def change(self, name: str) -> None:
        """A watched change (a kept extraConfig key gets a new value)."""
        self.counter += 1
        self.changed_at[name] = len(self.env.received)
        await self.env.vsphere(inv.set_extra_config, self.vms[name], {WATCHED_KEY: str(self.counter)})

    async def change_each(self, names: Iterable[str] | None = None) -> None:
        """A watched change to each of `names` (every VM by default), one after the other."""
        for name in self.names if names is None else names:
            await self.change(name)

    async def change_ignored(self, name: str) -> None:
        self.counter += 1
        await self.env.vsphere(inv.set_extra_config, self.vms[name], {IGNORED_KEY: str(self.counter)})

    def lost(self) -> list[str]:
        """VMs changed whose request has not arrived since their last change."""
        ns = self.env.namespace
        return [n for n, at in sorted(self.changed_at.items()) if (ns, n) not in self.env.received[at:]]

    async def wait_delivered(self, *, timeout_s: float = 30.0) -> list[str]:
        """Wait (bounded) for every changed VM's request; returns the ones still missing (lost)."""
        deadline = time.monotonic() + timeout_s
        while self.lost() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self.lost()


async def record_delivered(
    recorder: Recorder, row_id: str, fleet: Fleet, *, test: str, did: str, timeout_s: float = 30.0
) -> None:
    """Wait (bounded) for every changed VM's request, record row `row_id` with the number lost, then require
    that none was lost."""
    lost = await fleet.wait_delivered(timeout_s=timeout_s)
    recorder.record(row_id, lost=len(lost), test=test, did=did)
    assert lost == [], lost


async def make_fleet(env: ServiceEnv, n: int, *, verified: bool = True, zone: bool = True) -> Fleet:
    """n Kubernetes VirtualMachines linked to the first n vSphere VMs (by status.uniqueID when `verified`, else by
    the extraConfig name), a Zone on the root VM folder, the watcher started and settled."""
    folder = await env.vsphere(inv.vm_folder)
    refs = [ref for ref, _ in await env.vsphere(inv.vms_under, folder)][:n]
    assert len(refs) == n, refs
    vms = {f'vm-{i}': ref for i, ref in enumerate(refs)}
    for name, ref in vms.items():
        env.create_vm(name, unique_id=ref.value if verified else '')
    for name, ref in vms.items():
        await env.index_has(name, (lambda e, r=ref: e[0] == r.value) if verified else (lambda e: True))
        if not verified:
            await env.vsphere(inv.set_extra_config, ref, {'vmservice.namespacedName': f'{env.namespace}/{name}'})
    if zone:
        env.create_zone('zone-0', folder.value)
        await until(lambda: env.service.zones.cache.get((env.namespace, 'zone-0')) is not None, 'the zone cache')
    env.service.start_watching()
    await until(lambda: env.service.watching, 'the watcher to start')
    if zone:
        slot = env.service.shard.slot
        await until(lambda: slot.watcher is not None and folder in slot.watcher.owners(), 'the zone folder watched')
    await env.settle()
    return Fleet(env=env, folder=folder, vms=vms)


def kill(vc: VcsimServer) -> None:
    """SIGKILL vcsim (no goodbye on any socket), then release what the launcher held."""
    proc = vc._proc
    assert proc is not None
    proc.kill()
    proc.wait(timeout=10)
    vc.stop()


async def relogin(env: ServiceEnv) -> None:
    """The test's own session after a vcsim restart (its password file is re-read)."""
    await asyncio.to_thread(env.session.logout)
    await asyncio.to_thread(env.session.login)


async def new_login(env: ServiceEnv, since: int, what: str = 'a new login', *, timeout_s: float = 30.0) -> None:
    """Wait for a login after the first `since` ones, and the watcher it starts."""
    await until(lambda: env.service.shard.logins > since and env.service.watching, what, timeout_s=timeout_s)


def terminate(session: Session, victim: Session) -> None:
    """End `victim`'s session from `session` (another client), as an administrator would."""
    key = victim.content.sessionManager.currentSession.key
    session.call('TerminateSession', session.content.sessionManager.TerminateSession, [key])


def set_session_timeout(session: Session, value: str) -> None:
    """vcsim expires sessions idle for `value` (a Go duration) that log in after this call."""
    opt = vim.option.OptionValue(key='config.vmacore.soap.sessionTimeout', value=value)
    session.call('UpdateOptions', session.content.setting.UpdateOptions, [opt])


def counter(metric: Any, **labels: str) -> float:
    return float((metric.labels(**labels) if labels else metric)._value.get())
