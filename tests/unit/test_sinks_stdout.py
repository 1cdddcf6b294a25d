# SPDX-License-Identifier: Apache-2.0
"""The stdout sink and the annotation value stamp."""

from __future__ import annotations

import asyncio
import io

import orjson

from vmwatch.kube.sinks import StdoutSink, _Stamp
from vmwatch.queue import WorkQueue


def test_stdout_sink_writes_one_json_line_per_request() -> None:
    async def main() -> bytes:
        out = io.BytesIO()
        q = WorkQueue()
        q.add(('ns', 'a'), priority=1)
        q.add(('ns', 'b'), priority=99)
        q.add(('ns', 'a'), priority=2)  # coalesced
        sink = StdoutSink(out)
        task = asyncio.ensure_future(sink.run(q))
        await q.shutdown(drain=True)
        await task
        assert sink.written == 2
        return out.getvalue()

    lines = [orjson.loads(line) for line in asyncio.run(main()).splitlines()]
    assert [(x['namespace'], x['name'], x['priority']) for x in lines] == [('ns', 'b', 99), ('ns', 'a', 2)]
    assert all(x['time'].endswith('Z') for x in lines)


def test_stamps_strictly_increase() -> None:
    stamp = _Stamp()
    values = [stamp() for _ in range(1000)]
    assert values == sorted(values) and len(set(values)) == 1000
