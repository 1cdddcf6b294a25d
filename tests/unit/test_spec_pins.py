# SPDX-License-Identifier: Apache-2.0
"""The exact lists of spec 2.1 and 2.2, pinned, and each must-not-ignore key run through the Rust Decider.

A key added to or dropped from the default ignore list changes which VMs get reconciled: the lists are
copied here from the spec by hand (not from settings.py), so any edit of either side fails a test.
"""

from __future__ import annotations

import re
from pathlib import Path
from xml.sax.saxutils import escape

import pytest

from vmwatch import Index, _vmwatch
from vmwatch.settings import (
    DEFAULT_IGNORED_EXTRA_CONFIG_KEYS,
    DEFAULT_WATCHED_PATHS,
    NAMESPACED_NAME_KEY,
    FilterSettings,
)
from vmwatch.watcher import make_decider

# spec 2.1, in the spec's order
SPEC_WATCHED_PATHS = (
    'config.annotation',
    'config.changeTrackingEnabled',
    'config.cpuAllocation',
    'config.cpuHotAddEnabled',
    'config.extraConfig',
    'config.flags.vvtdEnabled',
    'config.hardware.autoCoresPerSocket',
    'config.hardware.device',
    'config.hardware.memoryMB',
    'config.hardware.numCoresPerSocket',
    'config.hardware.numCPU',
    'config.hardware.simultaneousThreads',
    'config.keyId',
    'config.latencySensitivity',
    'config.memoryAllocation',
    'config.memoryHotAddEnabled',
    'config.memoryReservationLockedToMax',
    'config.nestedHVEnabled',
    'config.numaInfo',
    'config.vPMCEnabled',
    'guestHeartbeatStatus',
    'rootSnapshot',
    'snapshot',
    'summary.config.name',
    'summary.guest',
    'summary.overallStatus',
    'summary.runtime.connectionState',
    'summary.runtime.host',
    'summary.runtime.powerState',
    'resourcePool',
    'parent',
)

# spec 2.2, in the spec's order: the backup constants, then the remaining defaults
SPEC_IGNORED_KEYS = (
    'vmservice.virtualmachine.additional.resources.yaml',
    'vmservice.virtualmachine.backupVersion',
    'vmservice.virtualmachine.classicDiskData',
    'vmservice.virtualmachine.disableAutomaticRegistration',
    'vmservice.virtualmachine.enableAutomaticRegistration',
    'vmservice.virtualmachine.pvc.disk.data',
    'vmservice.virtualmachine.resource.yaml',
    'govcsim',
    'vmservice.namespacedName',
    'hpet0.present',
    'vmprov.keepDisks',
    'guestinfo.vmservice.defer-cloud-init',
    'numa.autosize.cookie',
    'numa.autosize.vcpu.maxPerVirtualNode',
    'sched.swap.derivedName',
    'scsi0:0.redo',
    'scsi0.sasWWID',
    'scsi0:1.redo',
    'scsi0:2.redo',
    'scsi0:3.redo',
    'scsi0:4.redo',
    'scsi0:5.redo',
    'scsi0:6.redo',
    'scsi0:8.redo',
    'scsi0:9.redo',
    'scsi0:10.redo',
    'scsi0:11.redo',
    'vmotion.checkpointFBSize',
    'vmotion.checkpointSVGAPrimarySize',
    'vmotion.svga.mobMaxSize',
    'vmotion.svga.graphicsMemoryKB',
    'monitor.phys_bits_used',
    'softPowerOff',
    'tools.capability.verifiedSamlToken',
    'guestInfo.detailed.data',
    'vmware.tools.internalversion',
    'vmware.tools.requiredversion',
    'migrate.hostLogState',
    'migrate.migrationId',
    'migrate.hostLog',
    'guestinfo.appInfo',
    'guestinfo.vmtools.buildNumber',
    'guestinfo.vmtools.description',
    'guestinfo.vmtools.versionNumber',
    'guestinfo.vmtools.versionString',
    'guestinfo.vmware.components.available',
)

# spec 2.2 "must NOT be ignored": each was ignored once and it broke production
MUST_NOT_IGNORE = (
    'guestinfo.metadata',
    'guestinfo.metadata.encoding',
    'guestinfo.userdata',
    'guestinfo.userdata.encoding',
    'guestinfo.vendordata',
    'guestinfo.vendordata.encoding',
    'nvram',
    'viv.moid',
    'svga.present',
    'vmxstats.filename',
    *(f'ethernet{n}.pciSlotNumber' for n in range(10)),
    'pciBridge0.present',
    'pciBridge0.pciSlotNumber',
    *(f'pciBridge{n}.{leaf}' for n in range(4, 8) for leaf in ('present', 'pciSlotNumber', 'virtualDev', 'functions')),
    *(f'scsi{n}.pciSlotNumber' for n in range(4)),
    'disk.enableUUID',
    'vmware.tools.gosc.ignoretoolscheck',
)

VM = 'vm-7'
NAME = ('ns-1', 'vm-1')


def test_default_watched_paths_are_exactly_the_31_of_spec_2_1() -> None:
    assert len(SPEC_WATCHED_PATHS) == 31
    assert DEFAULT_WATCHED_PATHS == SPEC_WATCHED_PATHS
    assert FilterSettings().watched_paths == SPEC_WATCHED_PATHS


def test_default_ignored_keys_are_exactly_the_46_of_spec_2_2() -> None:
    assert len(SPEC_IGNORED_KEYS) == len(set(SPEC_IGNORED_KEYS)) == 46
    assert DEFAULT_IGNORED_EXTRA_CONFIG_KEYS == SPEC_IGNORED_KEYS
    assert FilterSettings().all_ignored_keys() == SPEC_IGNORED_KEYS
    assert 'scsi0:7.redo' not in DEFAULT_IGNORED_EXTRA_CONFIG_KEYS  # not a typo in the spec: no :7
    assert not set(MUST_NOT_IGNORE) & set(DEFAULT_IGNORED_EXTRA_CONFIG_KEYS)
    assert len(MUST_NOT_IGNORE) == 6 + 4 + 10 + 2 + 16 + 4 + 2


SPEC_EXCERPT = Path(__file__).resolve().parents[1] / 'data' / 'spec-2.1-2.2.md'
SHARED_SPEC = Path('/work/shared/spec.md')  # the project's spec, where it is checked out next to the tree


def _spec_section(text: str, number: str) -> str:
    start = text.index(f'### {number} ')
    end = text.find('\n##', start + 1)
    return text[start : len(text) if end < 0 else end].rstrip()


def _spec_list(section: str) -> tuple[list[str], int]:
    """The entries of a section's code blocks in order (notes in parentheses dropped, several entries on one line
    split), and the count its heading announces."""
    announced = int(re.search(r'(\d+) (?:paths|keys)', section.splitlines()[0]).group(1))  # type: ignore[union-attr]
    entries = []
    for block in re.findall(r'```\n(.*?)```', section, re.S):
        for line in block.splitlines():
            entries.extend(re.sub(r'\([^)]*\)', ' ', line).split())
    return entries, announced


def test_the_defaults_are_the_lists_parsed_out_of_spec_2_1_and_2_2() -> None:
    """Read from the spec's own text (not the hand copies above): the same entries, the same order, the announced
    counts, and no duplicate."""
    text = SPEC_EXCERPT.read_text()
    paths, n_paths = _spec_list(_spec_section(text, '2.1'))
    keys, n_keys = _spec_list(_spec_section(text, '2.2'))
    assert (len(paths), len(keys)) == (n_paths, n_keys) == (31, 46)
    assert set(DEFAULT_WATCHED_PATHS) == set(paths) and list(DEFAULT_WATCHED_PATHS) == paths
    assert set(DEFAULT_IGNORED_EXTRA_CONFIG_KEYS) == set(keys) and list(DEFAULT_IGNORED_EXTRA_CONFIG_KEYS) == keys
    assert len(set(paths)) == len(paths) and len(set(keys)) == len(keys)
    from vmwatch.settings import ServiceSettings

    fs = ServiceSettings().filter_settings()  # what `vmwatch run` hands the Watcher and the Decider by default
    assert list(fs.watched_paths) == paths and list(fs.all_ignored_keys()) == keys


@pytest.mark.skipif(not SHARED_SPEC.exists(), reason='the project spec is not checked out next to this tree')
def test_the_excerpt_is_the_spec_verbatim() -> None:
    spec = SHARED_SPEC.read_text()
    excerpt = SPEC_EXCERPT.read_text()
    for number in ('2.1', '2.2'):
        assert _spec_section(excerpt, number) == _spec_section(spec, number), number


def body(version: int, kind: str, extra: dict[str, str]) -> bytes:
    """A WaitForUpdatesEx response: VM's extraConfig (named NAME) plus `extra`, as vCenter sends it."""
    entries = {NAMESPACED_NAME_KEY: '/'.join(NAME), **extra}
    options = ''.join(
        f'<OptionValue xsi:type="OptionValue"><key>{escape(k)}</key>'
        f'<value xsi:type="xsd:string">{escape(v)}</value></OptionValue>'
        for k, v in entries.items()
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope'
        ' xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema"'
        ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>'
        '<WaitForUpdatesExResponse xmlns="urn:vim25"><returnval>'
        f'<version>{version}</version><filterSet><filter type="PropertyFilter">f-1</filter>'
        f'<objectSet><kind>{kind}</kind><obj type="VirtualMachine">{VM}</obj>'
        '<changeSet><name>config.extraConfig</name><op>assign</op>'
        f'<val xsi:type="ArrayOfOptionValue">{options}</val></changeSet>'
        '</objectSet></filterSet></returnval></WaitForUpdatesExResponse></soapenv:Body></soapenv:Envelope>'
    ).encode()


class Decided:
    """The Decider the watcher builds from the default FilterSettings, over a VM that entered scope."""

    def __init__(self, **first: str) -> None:
        index = Index()
        index.upsert(*NAME, unique_id=VM, deleting=False, priority=0)  # verified: its enter does not signal
        self.decider = make_decider(FilterSettings(), index)
        self.version = 1
        assert self.decide('enter', first).signals == []

    def decide(self, kind: str, extra: dict[str, str]) -> _vmwatch.Batch:
        self.version += 1
        b = self.decider.decide(body(self.version, kind, extra))
        assert isinstance(b, _vmwatch.Batch), b
        assert b.pending == []
        return b


def changed_keys(b: _vmwatch.Batch) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(s.moref, s.reason, s.changed) for s in b.signals]


@pytest.mark.parametrize('key', MUST_NOT_IGNORE)
def test_a_must_not_ignore_key_is_a_real_change(key: str) -> None:
    d = Decided(**{key: 'a'})
    real = [(VM, 'changed', ('config.extraConfig',))]
    assert changed_keys(d.decide('modify', {key: 'b'})) == real  # a new value
    assert changed_keys(d.decide('modify', {key: 'b'})) == []  # the same value again: nothing
    assert changed_keys(d.decide('modify', {})) == real  # removed
    assert changed_keys(d.decide('modify', {key: 'c'})) == real  # appears (after create/resize)


@pytest.mark.parametrize('key', [k for k in SPEC_IGNORED_KEYS if k != NAMESPACED_NAME_KEY])
def test_an_ignored_key_is_never_a_change(key: str) -> None:
    d = Decided(**{key: 'a'})
    for extra in ({key: 'b'}, {}, {key: 'c'}):
        b = d.decide('modify', extra)
        assert changed_keys(b) == [], extra
        assert b.skipped['unchanged'] == 1
    # ...while a kept key next to it still signals
    assert changed_keys(d.decide('modify', {key: 'd', 'guestinfo.userdata': 'e30='})) == [
        (VM, 'changed', ('config.extraConfig',))
    ]
