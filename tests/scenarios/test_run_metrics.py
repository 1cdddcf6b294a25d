# SPDX-License-Identifier: Apache-2.0
"""`vmwatch run`'s /metrics after a real scenario (vcsim through a SOAP relay, kube-apiserver): every series of
issue 14's Metrics section moved, and no `*_created` series is exported.

The scenario: two named VMs in the Zone's folder before the start (an initial sync in pages of one object:
truncated pages, enters), a sink that cannot write for a while (stdout is a full pipe: work in progress), a
change (modify), a VM destroyed (leave) and one InvalidCollectorVersion from the relay (a resync).
"""

from __future__ import annotations

import fcntl
import os
import re
import threading
import time
from typing import Any

import pytest
from probes import http_get, wait_until
from soap_replay import SoapRelay
from test_run_cmd import RunProcess, run_env  # noqa: F401  (run_env: the fixture)

from vmwatch.vsphere import inventory as inv

pytestmark = pytest.mark.servers

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$')


def scrape(p: RunProcess) -> tuple[str, dict[str, float]]:
    """The exposition text and its samples, keyed 'name{labels}' (labels as exported, sorted by name)."""
    code, text = http_get(f'{p.metrics_base}/metrics')
    assert code == 200, text
    samples = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m and not line.startswith('#'):
            samples[m.group(1) + (m.group(2) or '')] = float(m.group(3))
    return text, samples


def value(samples: dict[str, float], name: str, /, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels` (0 when there is none)."""
    total = 0.0
    for key, v in samples.items():
        series, _, rest = key.partition('{')
        if series == name and all(f'{k}="{val}"' in rest for k, val in labels.items()):
            total += v
    return total


def full_pipe() -> tuple[int, int]:
    """A pipe whose buffer (one page) is already full: the first line the stdout sink writes blocks."""
    r, w = os.pipe()
    size = fcntl.fcntl(w, 1031, 4096)  # F_SETPIPE_SZ: the smallest buffer
    os.write(w, b'\n' * size)
    return r, w


def test_every_series_moves_after_a_real_scenario(run_env: Any) -> None:  # noqa: F811
    ns, session = run_env.namespace, run_env.session
    relay = SoapRelay(run_env.vcsim).start()
    r, w = full_pipe()
    try:
        for i, name in enumerate(('vm-a', 'vm-b')):
            run_env.named_vm(name)
            run_env.vm_change(i, {'vmservice.namespacedName': f'{ns}/{name}'})
        p = run_env.start('a', stdout=w, VMWATCH_VC_URL=relay.url, VMWATCH_VC_INSECURE='true', VMWATCH_VC_CA_FILE='',
                          VMWATCH_MAX_OBJECT_UPDATES='1')  # fmt: skip
        os.close(w)
        wait_until(lambda: http_get(f'{p.base}/readyz')[1] == 'watching\n', 'watching')

        # the sink is stuck writing the first request: it is work in progress, and it ages
        vms = {'name': 'virtualmachine'}
        wait_until(lambda: value(scrape(p)[1], 'workqueue_longest_running_processor_seconds', **vms) > 0.5,
                   'a request in progress for over 0.5 s')  # fmt: skip
        _text, stuck = scrape(p)
        longest = value(stuck, 'workqueue_longest_running_processor_seconds', **vms)
        assert value(stuck, 'workqueue_unfinished_work_seconds', **vms) >= longest > 0.5
        out = bytearray()

        def read() -> None:
            while chunk := os.read(r, 65536):
                out.extend(chunk)

        threading.Thread(target=read, daemon=True).start()  # the sink can write again
        wait_until(lambda: f'"{ns}"'.encode() in out, 'the stuck request written')

        vm_a, vm_b = (ref for ref, _name in inv.vms_under(session, inv.vm_folder(session))[:2])
        inv.set_extra_config(session, vm_a, {'guestinfo.userdata': 'e30='})  # modify: signals "changed"
        wait_until(lambda: value(scrape(p)[1], 'vmwatch_signals_total', reason='changed') >= 1, 'a changed signal')
        inv.destroy(session, vm_b)  # leave (vcsim reports no leave for a VM moved out of the folder)
        wait_until(lambda: value(scrape(p)[1], 'vmwatch_object_updates_total', kind='leave') >= 1, 'a leave')
        relay.invalid_version_next()
        wait_until(lambda: value(scrape(p)[1], 'vmwatch_resyncs_total') >= 1, 'a resync', timeout_s=20)
        # the relay answers the new wait from "" with the first page it saw: one VM enters again
        wait_until(lambda: value(scrape(p)[1], 'vmwatch_object_updates_total', kind='enter') >= 3, 'the resync page')

        text, s = scrape(p)
        vc = {'vcenter': 'default'}
        for name, labels in (
            ('vmwatch_batches_total', vc),
            ('vmwatch_batch_duration_seconds_count', vc),
            ('vmwatch_skipped_total', vc),
            ('vmwatch_decoded_bytes_total', vc),
            ('vmwatch_object_updates_total', {**vc, 'kind': 'enter'}),
            ('vmwatch_object_updates_total', {**vc, 'kind': 'modify'}),
            ('vmwatch_object_updates_total', {**vc, 'kind': 'leave'}),
            ('vmwatch_signals_total', {**vc, 'reason': 'entered'}),
            ('vmwatch_signals_total', {**vc, 'reason': 'changed'}),
            ('vmwatch_change_enqueue_seconds_count', vc),
            ('vmwatch_change_enqueue_seconds_sum', vc),
            ('vmwatch_truncated_pages_total', vc),
            ('vmwatch_resyncs_total', vc),
            ('vmwatch_cache_hits_total', vc),
            ('vmwatch_cache_misses_total', vc),
            ('workqueue_work_duration_seconds_count', vms),
        ):
            assert value(s, name, **labels) > 0, f'{name}{labels} did not move:\n{text}'
        assert value(s, 'vmwatch_resyncs_total', **vc) == 1
        # every page but the last of a sync of two objects, one per page, is truncated: the initial sync and the
        # replayed one after the resync
        assert value(s, 'vmwatch_truncated_pages_total', **vc) >= 1
        assert value(s, 'vmwatch_change_enqueue_seconds_count', **vc) >= 3  # two entered, one changed
        assert value(s, 'vmwatch_decoded_bytes_total', **vc) > 1000
        # work in progress is over; the version lag is computed at each scrape (seconds since the last response)
        assert value(s, 'workqueue_longest_running_processor_seconds', **vms) < 0.5
        lag = value(s, 'vmwatch_collector_version_lag_seconds', **vc)
        time.sleep(0.3)
        later = value(scrape(p)[1], 'vmwatch_collector_version_lag_seconds', **vc)
        assert 0 <= lag < 5 + 2 and later != lag, (lag, later)  # VMWATCH_MAX_WAIT_S=5: a response every 5 s
        assert '# TYPE vmwatch_cache_hits_total counter' in text and '# TYPE vmwatch_cache_hits gauge' not in text
        assert 'process_resident_memory_bytes' in text and 'python_info{' in text  # the default collectors
        assert '_created' not in text
        assert p.stop() == 0
    finally:
        relay.stop()
        os.close(r)
