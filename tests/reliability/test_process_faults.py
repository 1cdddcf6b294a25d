# SPDX-License-Identifier: Apache-2.0
"""`vmwatch run` processes whose stdout reader misbehaves (issue 11 A4): it goes away, or it stops reading.

The sink's stdout is a real pipe. A reader that closes it ends the process with exit 1 (a closed stdout cannot
come back), noticed even when there is nothing to write. A reader that stops reading stalls the sink but never
the process: /readyz and SIGTERM still work, and SIGTERM exits after at most the shutdown grace.
"""

from __future__ import annotations

import os
import select
import signal
import time
from typing import TYPE_CHECKING, Any

from probes import http_get, wait_until
from test_run_cmd import run_env  # noqa: F401 (the fixture)

if TYPE_CHECKING:
    from conftest import Recorder

GRACE_S = 2.0


def _metric(base: str, name: str) -> float:
    _code, text = http_get(f'{base}/metrics')
    for line in text.splitlines():
        if line.startswith(name + ' '):
            return float(line.split(' ')[1])
    return 0.0


def _fill(fd: int) -> int:
    """Fill the pipe behind `fd` so the next write to it blocks; returns the bytes written."""
    os.set_blocking(fd, False)
    n = 0
    try:
        while True:
            n += os.write(fd, b'#' * 4096)
    except BlockingIOError:
        pass
    os.set_blocking(fd, True)
    return n


def _read_until(fd: int, needle: bytes, timeout_s: float = 30.0) -> bytes:
    got = b''
    deadline = time.monotonic() + timeout_s
    while needle not in got:
        left = deadline - time.monotonic()
        assert left > 0, f'no {needle!r} on stdout: {got[-500:]!r}'
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 65536)
            assert chunk, 'stdout closed'
            got += chunk
    return got


def test_a4_stdout_reader_gone_or_stuck(run_env: Any, recorder: Recorder) -> None:  # noqa: F811 (the fixture)
    ns = run_env.namespace
    # 1. a reader that stops reading: the pipe is full before vmwatch writes its first line
    r, w = os.pipe()
    _fill(w)
    p = run_env.start('stuck', stdout=w, VMWATCH_SHUTDOWN_GRACE_S=str(GRACE_S))
    os.close(w)
    try:
        wait_until(lambda: http_get(f'{p.base}/readyz') == (200, 'watching\n'), 'watching')
        for i, name in enumerate(('vm-a', 'vm-b', 'vm-c')):
            run_env.named_vm(name)
            run_env.vm_change(i, {'vmservice.namespacedName': f'{ns}/{name}'})
        # one request is stuck in the write, the others wait in the queue
        wait_until(lambda: _metric(p.metrics_base, 'workqueue_depth{name="virtualmachine"}') >= 1, 'requests queued')
        assert http_get(f'{p.base}/readyz') == (200, 'watching\n')  # a stuck write does not block the process
        t0 = time.monotonic()
        p.proc.send_signal(signal.SIGTERM)
        stuck_rc = p.proc.wait(timeout=GRACE_S + 30)
        stuck_exit_s = time.monotonic() - t0
    finally:
        os.close(r)
    err = p.err_path.read_text()
    assert stuck_rc == 1, err[-3000:]  # requests were left undelivered
    assert f'not delivered within the {GRACE_S} s shutdown grace' in err, err[-3000:]
    assert stuck_exit_s < GRACE_S + 2.0, stuck_exit_s

    # 2. a reader that reads one line and goes away: the process notices (with nothing more to write) and exits 1
    r, w = os.pipe()
    q = run_env.start('gone', stdout=w)
    os.close(w)
    try:
        wait_until(lambda: http_get(f'{q.base}/readyz') == (200, 'watching\n'), 'watching')
        got = b''
        for name in (b'"vm-a"', b'"vm-b"', b'"vm-c"'):  # the three VMs of part 1 enter scope: one line each
            got += _read_until(r, name) if name not in got else b''
        while select.select([r], [], [], 0.5)[0]:  # the sink has nothing left to write: it sits idle
            assert os.read(r, 65536)
        assert q.proc.poll() is None
    finally:
        os.close(r)
    t0 = time.monotonic()
    gone_rc = q.proc.wait(timeout=30)
    gone_exit_s = time.monotonic() - t0
    err = q.err_path.read_text()
    assert gone_rc == 1, err[-3000:]
    assert 'ERROR vmwatch.kube.sinks: sink closed: the reader of stdout went away' in err, err[-3000:]
    assert gone_exit_s < 5, gone_exit_s
    print(f'\nA4: SIGTERM with a stuck sink exited in {stuck_exit_s:.2f} s (grace {GRACE_S} s); '
          f'a reader gone: exited {gone_exit_s:.2f} s after it closed the pipe')  # fmt: skip
    recorder.record(
        'A4',
        did=f'a reader that stops reading stalls only the sink (/readyz still answers); SIGTERM with requests '
        f'queued exits 1 within the {GRACE_S:g} s grace + 2 s, logging how many it could not deliver; a reader '
        'that goes away ends the process with exit 1 within 5 s, also with nothing left to write (POLLERR on '
        'the pipe; EPIPE on a write), never a silent dead sink',
        lost=0,
        test='test_process_faults.py::test_a4_stdout_reader_gone_or_stuck',
    )
