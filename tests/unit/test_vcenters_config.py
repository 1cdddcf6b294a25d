# SPDX-License-Identifier: Apache-2.0
"""Several vCenters (issue 12): the vCenters file, the settings around it, routing and the shard share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from vmwatch.kube.routing import VCenterRouter
from vmwatch.settings import ServiceSettings, SettingsError
from vmwatch.vcenters import VCenter, VCenterConfigError, load_vcenters_file

GOOD = """
vcenters:
  - name: site-a
    url: https://vc-a.example.com/sdk
    userFile: a/user
    passwordFile: a/password
    caFile: /etc/pki/a.pem
  - name: site-b
    url: https://vc-b.example.com/sdk
    user: svc-vmwatch
    passwordFile: /etc/vmwatch/b/password
    thumbprint: 'AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99'
  - name: lab
    url: http://vc-lab:8989/sdk
    user: root
    passwordFile: lab-password
    insecure: true
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / 'vcenters.yaml'
    p.write_text(text)
    return p


def test_a_good_file_gives_every_vcenter_with_paths_from_its_directory(tmp_path: Path) -> None:
    vcs = load_vcenters_file(write(tmp_path, GOOD))
    assert [vc.name for vc in vcs] == ['site-a', 'site-b', 'lab']
    a, b, lab = vcs
    assert a.user_file == tmp_path / 'a' / 'user' and a.password_file == tmp_path / 'a' / 'password'
    assert a.ca_file == Path('/etc/pki/a.pem')
    assert b.user == 'svc-vmwatch' and b.thumbprint.startswith('AA:BB') and b.host == 'vc-b.example.com'
    assert lab.insecure and lab.host == 'vc-lab:8989'
    # a bare list works too
    bare = write(tmp_path, '- {name: one, url: "https://vc/sdk", user: u, passwordFile: /p}\n')
    assert load_vcenters_file(bare) == [VCenter(name='one', url='https://vc/sdk', user='u', password_file=Path('/p'))]


@pytest.mark.parametrize(
    ('text', 'message'),
    [
        ('', 'must hold a non-empty list'),
        ('vcenters: {}', 'must hold a non-empty list'),
        ('- just a string', 'entry 1 is not a mapping'),
        ('- {name: a, url: "https://vc/sdk", user: u, pasword_file: /p}', "unknown key 'pasword_file'"),
        ('- {url: "https://vc/sdk", user: u, passwordFile: /p}', 'name is required'),
        ('- {name: Site_A, url: "https://vc/sdk", user: u, passwordFile: /p}', 'must be a DNS label'),
        ('- {name: ' + 'a' * 41 + ', url: "https://vc/sdk", user: u, passwordFile: /p}', 'at most 40'),
        ('- {name: a, url: "https://vc/sdk", passwordFile: /p}', "vcenter 'a': user or userFile is required"),
        ('- {name: a, url: "https://vc/sdk", user: u}', "vcenter 'a': passwordFile is required"),
        ('- {name: a, url: "http://vc/sdk", user: u, passwordFile: /p}', 'needs'),
        ('- {name: a, url: "https://vc/sdk", user: u, passwordFile: /p, insecure: "yes"}', 'true or false'),
        ('- {name: a, url: "https://vc/sdk", user: u, passwordFile: /p, thumbprint: abc}', 'SHA-256'),
        ('- {name: a, url: "https://vc/sdk", user: u, passwordFile: /p, insecure: true, caFile: /c}', 'cannot be'),
        ('- {name: a, url: "https://vc/sdk", user: 7, passwordFile: /p}', 'user must be a string'),
        ('- {name: a, url: "https://vc/sdk", user: u, passwordFile: ""}', 'passwordFile must be a file path'),
        (
            '- {name: a, url: "https://vc/sdk", user: u, passwordFile: /p}\n'
            '- {name: a, url: "https://vc2/sdk", user: u, passwordFile: /p}',
            "names 'a' twice",
        ),
    ],
)
def test_a_bad_file_is_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(VCenterConfigError, match='.*') as e:
        load_vcenters_file(write(tmp_path, text))
    assert message in str(e.value)
    assert '\n' not in str(e.value)


def test_no_secret_in_the_errors(tmp_path: Path) -> None:
    with pytest.raises(VCenterConfigError) as e:
        load_vcenters_file(write(tmp_path, '- {name: a, url: "https://u:Sekr3t@vc/sdk", user: u, passwordFile: /p}'))
    assert 'Sekr3t' not in str(e.value) and 'user info' in str(e.value)
    with pytest.raises(VCenterConfigError) as e:  # a YAML error names the line, never echoes the text
        load_vcenters_file(write(tmp_path, '- name: a\n  password: "Sekr3t\n  url: x\n'))
    assert 'Sekr3t' not in str(e.value) and 'not valid YAML' in str(e.value)
    with pytest.raises(VCenterConfigError) as e:
        load_vcenters_file(tmp_path / 'missing.yaml')
    assert 'cannot read' in str(e.value)


def test_settings_take_the_file_or_the_flags_not_both(tmp_path: Path) -> None:
    f = write(tmp_path, GOOD)
    s = ServiceSettings(vcenters_file=f).validate()
    assert [vc.name for vc in s.vcenters()] == ['site-a', 'site-b', 'lab']
    assert s.shard_lease_name('site-a') == 'vmwatch-site-a'
    with pytest.raises(SettingsError, match='cannot be combined with --vc-url'):
        ServiceSettings(vcenters_file=f, vc_url='https://vc/sdk').validate()
    flags = ServiceSettings(vc_url='https://vc/sdk', vc_user='u', vc_password_file=Path('/p')).validate()
    assert [vc.name for vc in flags.vcenters()] == ['default']
    assert flags.shard_lease_name('default') == 'vmwatch'  # an upgrade keeps its Lease and checkpoint
    with pytest.raises(SettingsError, match='longer than 63'):  # it labels the checkpoint ConfigMaps
        ServiceSettings(
            vc_url='https://vc/sdk', vc_user='u', vc_password_file=Path('/p'), lease_name='x' * 64
        ).validate()
    long = ServiceSettings(vcenters_file=f, lease_name='x' * 58)  # + '-site-a': over 63
    with pytest.raises(SettingsError, match='Lease name'):
        long.vcenters()
    bad = ServiceSettings(vcenters_file=write(tmp_path, '- {name: a}'))
    with pytest.raises(SettingsError, match="^--vcenters-file: vcenter 'a': url is required$"):
        bad.vcenters()


def vm(name: str, labels: dict[str, str], namespace: str = 'ns') -> dict[str, Any]:
    return {'metadata': {'name': name, 'namespace': namespace, 'labels': labels}}


def zone(labels: dict[str, str]) -> dict[str, Any]:
    return {'metadata': {'labels': labels}}


def test_the_router_follows_labels_then_zones_then_the_only_vcenter() -> None:
    changes: list[int] = []
    r = VCenterRouter(['a', 'b'], on_map_change=lambda: changes.append(1))
    assert r.zone_vcenter(zone({'vmwatch.dev/vcenter': 'b'})) == 'b'
    assert r.zone_vcenter(zone({'vmwatch.dev/vcenter': 'x'})) == 'x' and not r.known('x')
    assert r.zone_vcenter(zone({})) is None
    assert r.vm_vcenter(vm('v', {'vmwatch.dev/vcenter': 'a', 'topology.kubernetes.io/zone': 'z'})) == 'a'
    assert r.vm_vcenter(vm('v', {'vmwatch.dev/vcenter': 'x'})) is None  # not configured: unassigned
    assert r.vm_vcenter(vm('v', {'topology.kubernetes.io/zone': 'z'})) is None  # Zone not known yet
    r.zone_changed(('ns', 'z'), zone({'vmwatch.dev/vcenter': 'b'}))
    assert changes == [1]
    assert r.vm_vcenter(vm('v', {'topology.kubernetes.io/zone': 'z'})) == 'b'
    assert r.vm_vcenter(vm('v', {'topology.kubernetes.io/zone': 'z'}, namespace='other')) is None  # same namespace
    r.zone_changed(('ns', 'z'), zone({'vmwatch.dev/vcenter': 'b'}))  # no change of the map: no relist
    assert changes == [1]
    r.zone_changed(('ns', 'z'), None)
    assert changes == [1, 1] and r.vm_vcenter(vm('v', {'topology.kubernetes.io/zone': 'z'})) is None
    assert r.vm_vcenter({'metadata': 'garbage'}) is None and r.vm_vcenter(None) is None

    one = VCenterRouter(['default'], on_map_change=lambda: changes.append(2))
    assert one.zone_vcenter(zone({})) == 'default' and one.vm_vcenter(vm('v', {})) == 'default'
    assert one.vm_vcenter(vm('v', {'vmwatch.dev/vcenter': 'other'})) is None
    one.zone_changed(('ns', 'z'), zone({}))
    assert changes == [1, 1]  # one vCenter: the map never reroutes anything


class FakeElector:
    def __init__(self, leading: bool) -> None:
        self.is_leader = leading
        self.stepping_down = False

    def step_down(self) -> None:
        self.stepping_down = True


@pytest.mark.parametrize(('n', 'live', 'share'), [(3, 2, 2), (3, 3, 1), (3, 1, 3), (5, 2, 3), (2, 5, 1), (3, 0, 0)])
def test_the_share_is_ceil_of_shards_over_live_replicas(n: int, live: int, share: int) -> None:
    from vmwatch.kube.shards import ShardLeases

    leases = ShardLeases(
        None, namespace='ns', lease_name='vmwatch', shards=[(f's{i}', f'vmwatch-s{i}') for i in range(n)]
    )
    assert leases.membership is not None
    leases.membership.live = live
    assert leases.share == share
    assert leases._may_acquire() is (share > 0)  # holding none yet


def test_one_over_the_share_hands_over_one_shard_at_a_time() -> None:
    from vmwatch.kube.shards import ShardLeases

    leases = ShardLeases(None, namespace='ns', lease_name='vmwatch', shards=[(s, f'vmwatch-{s}') for s in 'abc'])
    fakes = {s: FakeElector(True) for s in 'abc'}
    leases.electors = fakes  # type: ignore[assignment]
    assert leases.membership is not None
    leases.membership.live = 1
    leases._rebalance()
    assert not any(f.stepping_down for f in fakes.values())  # alone: all three are its share
    assert not leases._may_acquire()
    leases.membership.live = 2  # another replica joined: share 2
    leases._rebalance()
    assert [s for s, f in fakes.items() if f.stepping_down] == ['c']
    leases._rebalance()  # one hand-over at a time: nothing more until c is released
    assert [s for s, f in fakes.items() if f.stepping_down] == ['c']
    fakes['c'] = FakeElector(False)
    leases._rebalance()
    assert not any(f.stepping_down for f in fakes.values()) and not leases._may_acquire()


def test_one_shard_needs_no_membership() -> None:
    from vmwatch.kube.shards import ShardLeases

    leases = ShardLeases(None, namespace='ns', lease_name='vmwatch', shards=[('default', 'vmwatch')])
    assert leases.membership is None and leases.share == 1 and leases._may_acquire()
