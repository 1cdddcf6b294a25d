# SPDX-License-Identifier: Apache-2.0
"""Nothing lost (issue 8): a seeded random mix of watched changes, ignored-only changes and faults.

N VMs in a Zone's folder, each with a VirtualMachine (half linked by status.uniqueID, half by the
extraConfig name). After the initial sync has settled (the baseline: requests are counted from there),
M random steps: a watched change (a kept extraConfig key, power on/off), a change of an ignored
extraConfig key only, or a fault (vcsim killed and restarted with a rotated password, our session
terminated by another client, a pause until everything settled). The oracle, checked at the end:

* every VM whose watched state changed got a request after its last watched change;
* no VM whose only changes were ignored keys (or that was not changed at all) got a request.

"Changed" is relative to what the service can have seen. vcsim restarts with a fresh inventory (same
MoRefs, default state), so a restart is gated the way a real rotation is: the server comes back with a new
password and the service's password file is updated only once the test has put every VM back into the
state it had, plus the changes made "while the service was away" (those must be signalled). vcsim
regenerates the CD-ROM device name and host placement on restart (real vCenter keeps its inventory), so the
service here watches every default path except config.hardware.device and summary.runtime.host, to compare
like with like (as tests/scenarios/test_watcher_more.py does).

Replay one seed: VMWATCH_SEED=1234 .venv/bin/pytest tests/reliability/test_nothing_lost.py
"""

from __future__ import annotations

import asyncio
import os
import random
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from rel_helpers import IGNORED_KEY, WATCHED_KEY, Fleet, kill, make_fleet, new_login, relogin, terminate, topology
from service_env import ServiceEnv, service_env, until

from conftest import Recorder
from vmwatch.devenv import VcsimServer
from vmwatch.settings import DEFAULT_WATCHED_PATHS, FilterSettings, ServiceSettings
from vmwatch.vsphere import MoRef, Session, SessionError
from vmwatch.vsphere import inventory as inv
from vmwatch.watcher import NoWatcherError, make_decider

pytestmark = [
    pytest.mark.anyio,
    # an SSL socket of a connection that vcsim's SIGKILL reset is sometimes collected unclosed (pyVmomi's pool
    # or a session's stub); not a lost signal: tracked as an open item in the issue, not hidden elsewhere
    pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning'),
]

N_VMS = 8
STEPS = 60
DEFAULT_SEEDS = (1, 2, 3)
_REPLAY = os.environ.get('VMWATCH_SEED')
SEEDS = (int(_REPLAY),) if _REPLAY else DEFAULT_SEEDS

STABLE_PATHS = tuple(p for p in DEFAULT_WATCHED_PATHS if p not in ('config.hardware.device', 'summary.runtime.host'))


@dataclass(frozen=True, kw_only=True)
class StableSettings(ServiceSettings):
    def filter_settings(self) -> FilterSettings:
        return replace(super().filter_settings(), watched_paths=STABLE_PATHS)


@dataclass
class Model:
    """What the test made of each VM: the state vCenter must report, to re-apply after a restart."""

    watched: dict[str, int]  # name -> value of WATCHED_KEY (absent: never set)
    ignored: dict[str, int]
    powered_on: set[str]
    named: set[str]  # linked by the extraConfig name (the others by status.uniqueID)


def power(session: Session, vm: MoRef, on: bool) -> None:
    obj = session.managed_object(vm)
    task = session.call(
        'PowerOnVM_Task' if on else 'PowerOffVM_Task', obj.PowerOnVM_Task if on else obj.PowerOffVM_Task
    )
    inv._wait(session, task, 'power')


class Driver:
    def __init__(self, env: ServiceEnv, fleet: Fleet, vc: VcsimServer, service_password: Path, rng: random.Random):
        self.env, self.fleet, self.vc, self.rng = env, fleet, vc, rng
        self.service_password = service_password
        self.model = Model(
            watched={}, ignored={}, powered_on=set(), named={n for i, n in enumerate(fleet.names) if i % 2}
        )
        self.trace: list[str] = []
        self.value = 0

    def next_value(self) -> int:
        self.value += 1
        return self.value

    async def watched_change(self, name: str) -> None:
        self.fleet.changed_at[name] = len(self.env.received)
        if self.rng.random() < 0.7:
            value = self.model.watched[name] = self.next_value()
            await self.env.vsphere(inv.set_extra_config, self.fleet.vms[name], {WATCHED_KEY: str(value)})
            self.trace.append(f'watched {name}={value}')
        else:
            on = name not in self.model.powered_on
            await self.env.vsphere(power, self.fleet.vms[name], on)
            (self.model.powered_on.add if on else self.model.powered_on.discard)(name)
            self.trace.append(f'power {name} {"on" if on else "off"}')

    async def ignored_change(self, name: str) -> None:
        value = self.model.ignored[name] = self.next_value()
        await self.env.vsphere(inv.set_extra_config, self.fleet.vms[name], {IGNORED_KEY: str(value)})
        self.trace.append(f'ignored {name}={value}')

    async def restart_vcsim(self) -> None:
        """Kill vcsim, bring it back with a new password, restore every VM, change a few while the service
        is locked out, then hand the service the new password."""
        self.trace.append('kill vcsim; restart with a new password')
        await asyncio.to_thread(kill, self.vc)
        await asyncio.to_thread(self.vc.restart, password=f'pw-{self.next_value()}')
        await relogin(self.env)
        m, ns = self.model, self.env.namespace
        for name, ref in self.fleet.vms.items():
            values = {}
            if name in m.named:
                values['vmservice.namespacedName'] = f'{ns}/{name}'
            if name in m.watched:
                values[WATCHED_KEY] = str(m.watched[name])
            if name in m.ignored:
                values[IGNORED_KEY] = str(m.ignored[name])
            if values:
                await self.env.vsphere(inv.set_extra_config, ref, values)
            if name in m.powered_on:
                await self.env.vsphere(power, ref, True)
        for name in self.rng.sample(self.fleet.names, 2):
            await (self.watched_change(name) if self.rng.random() < 0.6 else self.ignored_change(name))
        logins = self.env.service.shard.logins
        self.service_password.write_text(self.vc.password + '\n')
        await new_login(self.env, logins, 'the service back')

    async def terminate_session(self) -> None:
        self.trace.append('terminate the service session')
        victim = self.env.service.shard.session
        if victim is not None and self.env.service.watching:
            try:
                await self.env.vsphere(terminate, victim)
            except Exception as e:  # the service may be between sessions: nothing to terminate
                self.trace.append(f'  (terminate: {type(e).__name__})')

    async def step(self) -> None:
        r = self.rng.random()
        name = self.rng.choice(self.fleet.names)
        if r < 0.45:
            await self.watched_change(name)
        elif r < 0.75:
            await self.ignored_change(name)
        elif r < 0.83:
            await self.restart_vcsim()
        elif r < 0.93:
            await self.terminate_session()
        else:
            self.trace.append('settle')
            await settle(self.env)


async def settle(env: ServiceEnv) -> None:
    """env.settle(), again when the watcher it synced with ended (a terminated session) until one holds."""
    for _ in range(10):
        await until(lambda: env.service.watching, 'a watcher', timeout_s=60)
        try:
            await env.settle()
            return
        except (SessionError, NoWatcherError):
            continue
    raise AssertionError('no watcher lasted long enough to settle')


async def run_seed(kube_api: client.ApiClient, vc: VcsimServer, tmp_path: Path, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    service_password = tmp_path / 'service-password'
    service_password.write_text(vc.password + '\n')
    overrides: dict[str, Any] = dict(vc_password_file=service_password, max_wait_s=2)
    async with service_env(kube_api, vc, **overrides) as env:
        s = env.service
        s.settings = s.shard.settings = StableSettings(**{f.name: getattr(s.settings, f.name)
                                                           for f in fields(ServiceSettings)})  # fmt: skip
        s.shard.decider = s.shard.ledger.decider = make_decider(s.settings.filter_settings(), s.index.index)
        if s.shard.checkpointer is not None:
            s.shard.checkpointer.decider = s.shard.decider
        fleet = await make_fleet(env, N_VMS, verified=True, zone=False)
        driver = Driver(env, fleet, vc, service_password, rng)
        # half the VMs lose their uniqueID link and are named by extraConfig instead
        for name in sorted(driver.model.named):
            env.objects.patch_namespaced_custom_object_status(
                'vmoperator.vmware.com', 'v1alpha6', env.namespace, 'virtualmachines', name,
                {'status': {'uniqueID': None}},
            )  # fmt: skip
            await env.index_has(name, lambda e: e[0] == '')
            await env.vsphere(
                inv.set_extra_config, fleet.vms[name], {'vmservice.namespacedName': f'{env.namespace}/{name}'}
            )
        env.create_zone('zone-0', fleet.folder.value)
        await until(lambda: s.watching and fleet.folder in s.shard.slot.watcher.owners(), 'the zone folder watched')  # type: ignore[union-attr]
        await env.settle()
        fleet.changed_at.clear()
        baseline = len(env.received)  # the first settle point: requests are counted from here
        for _ in range(STEPS):
            await driver.step()
        await until(lambda: s.watching, 'a watcher', timeout_s=60)
        lost = await fleet.wait_delivered(timeout_s=30)
        await settle(env)
        ns = env.namespace
        quiet = sorted(set(fleet.names) - set(fleet.changed_at))
        spurious = sorted({n for (k, n) in env.received[baseline:] if k == ns and n in quiet})
        return {'lost': lost, 'spurious': spurious, 'trace': driver.trace, 'changed': sorted(fleet.changed_at)}


@pytest.mark.parametrize('seed', SEEDS)
async def test_nothing_lost(
    kube_api: client.ApiClient, vcsim_factory: Any, tmp_path: Path, recorder: Recorder, seed: int
) -> None:
    recorder.replay = recorder.replay or bool(_REPLAY)
    vc = vcsim_factory(*topology(N_VMS))
    out = await run_seed(kube_api, vc, tmp_path, seed)
    recorder.record(
        'z', lost=len(out['lost']), test='test_nothing_lost.py::test_nothing_lost',
        did=f'seeds {", ".join(map(str, DEFAULT_SEEDS))}, {N_VMS} VMs, {STEPS} random steps each (watched '
        'extraConfig and power changes, ignored-key-only changes, vcsim killed and restarted with a rotated '
        'password, session terminated): every VM changed got a request after its last change, and no VM '
        'changed only in ignored keys got one',
    )  # fmt: skip
    replay = f'VMWATCH_SEED={seed} .venv/bin/pytest tests/reliability/test_nothing_lost.py'
    trace = '\n  '.join(out['trace'])
    assert not out['lost'] and not out['spurious'], (
        f'seed {seed}: lost {out["lost"]}, spurious {out["spurious"]} (changed: {out["changed"]})\n'
        f'replay: {replay}\nsteps:\n  {trace}'
    )
