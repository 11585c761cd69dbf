"""bench/_common.py's load generator (shared by bench_serving.py and bench_serving_peer.py) against a tiny
HTTP/1.1 keep-alive server on 127.0.0.1: good answers, bad statuses, bad JSON and `Connection: close` are
counted as they should be, and the request cap holds."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from _common import drive, summarize  # noqa: E402


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: list[int]) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length"))
            body = json.loads(await reader.readexactly(length))
            seen.append(body["i"])
            kind = body["i"] % 4  # 0: good, 1: 500, 2: not JSON, 3: good but the server closes the connection
            status, data = (500, b'{"error": "x"}') if kind == 1 else (200, b"not json" if kind == 2 else b'{"ok": 1}')
            close = b"Connection: close\r\n" if kind == 3 else b""
            writer.write(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n%s\r\n%s" % (status, len(data), close, data))
            await writer.drain()
            if close:
                break
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def test_drive_counts_good_and_bad_answers_and_stops_at_the_cap():
    seen: list[int] = []

    async def main():
        server = await asyncio.start_server(lambda r, w: _serve(r, w, seen), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        bodies = [json.dumps({"i": i}).encode() for i in range(40)]
        async with server:
            return await drive(f"http://127.0.0.1:{port}", "/x", bodies, lambda r: r["ok"] == 1, clients=3,
                               duration=30.0, max_requests=40)

    res = asyncio.run(main())
    assert sorted(seen) == list(range(40))  # every body sent once, round-robin, no more than the cap
    assert len(res["lat"]) == 20 and len(res["errors"]) == 20  # kinds 0 and 3 good; 1 and 2 errors
    assert sum(e.startswith("500 ") for e in res["errors"]) == 10
    assert sum("JSONDecodeError" in e for e in res["errors"]) == 10
    s = summarize([res])
    assert (s["requests"], s["ok"], s["errors"]) == (40, 20, 20) and s["qps"] > 0 and s["p99_ms"] >= s["p50_ms"]
