"""An asyncio micro-batcher: concurrent requests share one encoder forward pass and one FAISS search.

    batcher = MicroBatcher(fn, max_batch_size=32, max_wait_ms=2.0)   # fn(list[item]) -> list[result]
    result = await batcher.submit(item)                               # from any coroutine

One worker task takes the first queued item and everything already queued, then waits for more only
while the batch is smaller than the load asks for, and at most `max_wait_ms`: the batch goes out as
soon as it holds `max_batch_size` items or as many as the largest of the last `RECENT` batches. So a
lone request under light load goes at once (no wait), and under steady concurrent load (a wave of
clients whose answers went out together and whose next requests come back over a few ms) the batch
waits for the whole wave instead of leaving with part of it and making the rest wait a whole batch
(measured: bench/README.md, "Serving against a peer"). `fn` runs on the batch in a single-thread
executor (so the event loop keeps accepting requests while the batch runs, and every call to `fn` is
serialised: the index is never searched and modified at the same time). `max_batch_size=1` disables
batching (one request at a time).

A batch whose `fn` call raises is run again item by item, so an item that fails by itself fails
alone and the other requests of its batch get their results (the price, paid only on failure, is one
call per item).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
from collections.abc import Callable
from typing import Any

from prometheus_client import Histogram

# Exposed on the server's /metrics (kserve serves prometheus_client's default registry).
BATCH_SIZE = Histogram("resume_batch_size", "Items per micro-batch", ["batcher"],
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
RECENT = 8  # batches whose largest size sets how many items a batch waits for


class MicroBatcher:
    def __init__(self, fn: Callable[[list[Any]], list[Any]], *, max_batch_size: int = 32, max_wait_ms: float = 2.0,
                 executor: concurrent.futures.Executor | None = None, name: str = "batcher"):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.fn = fn
        self.name = name
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.executor = executor or concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self.n_batches = 0
        self.n_items = 0
        self._recent: collections.deque[int] = collections.deque([1], maxlen=RECENT)

    @property
    def mean_batch_size(self) -> float:
        return self.n_items / self.n_batches if self.n_batches else 0.0

    def _ensure_started(self) -> asyncio.Queue:
        if self._task is None or self._task.done():
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._worker())
        return self._queue

    async def submit(self, item: Any) -> Any:
        """Queue one item; returns its result (or raises what `fn` raised for its batch)."""
        fut = asyncio.get_running_loop().create_future()
        self._ensure_started().put_nowait((item, fut))
        return await fut

    async def run(self, fn: Callable[[], Any]) -> Any:
        """Run `fn()` on the batcher's thread, serialised with the batches (e.g. an index update)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn)

    async def _collect(self, queue: asyncio.Queue) -> list[tuple[Any, asyncio.Future]]:
        loop = asyncio.get_running_loop()
        batch = [await queue.get()]
        deadline = loop.time() + self.max_wait
        want = min(self.max_batch_size, max(self._recent))  # the load of late: wait for no more than that
        while len(batch) < self.max_batch_size:
            try:
                batch.append(queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            if len(batch) >= want:
                break
            timeout = deadline - loop.time()
            if timeout <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(queue.get(), timeout))
            except TimeoutError:
                break
        return batch

    async def _worker(self) -> None:
        queue = self._queue
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect(queue)
            live = [(item, fut) for item, fut in batch if not fut.done()]
            if not live:
                continue
            try:
                results = await self._call(loop, [item for item, _ in live])
            except Exception as e:
                if len(live) == 1:
                    _settle(live[0][1], error=e)
                else:  # one bad item must not fail the others: each item again, alone
                    await self._one_by_one(loop, live)
                continue
            self._count(len(live))
            for (_, fut), res in zip(live, results):
                _settle(fut, result=res)

    def _count(self, n: int) -> None:
        self._recent.append(n)
        self.n_batches += 1
        self.n_items += n
        BATCH_SIZE.labels(self.name).observe(n)

    async def _call(self, loop: asyncio.AbstractEventLoop, items: list[Any]) -> list[Any]:
        try:
            results = await loop.run_in_executor(self.executor, self.fn, items)
        except (Exception, asyncio.CancelledError):
            raise
        except BaseException as e:  # e.g. a Rust panic in a tokenizer (pyo3's PanicException): an error like others
            raise RuntimeError(f"{type(e).__name__}: {e}") from e
        if len(results) != len(items):
            raise RuntimeError(f"batch function returned {len(results)} results for {len(items)} items")
        return results

    async def _one_by_one(self, loop: asyncio.AbstractEventLoop, live: list[tuple[Any, asyncio.Future]]) -> None:
        """After a failed batch: run each item as a batch of one, so only the items that fail by
        themselves get an error (the worker keeps going either way)."""
        for item, fut in live:
            if fut.done():
                continue
            try:
                (res,) = await self._call(loop, [item])
            except Exception as e:
                _settle(fut, error=e)
                continue
            self._count(1)
            _settle(fut, result=res)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)


def _settle(fut: asyncio.Future, *, result: Any = None, error: BaseException | None = None) -> None:
    """Resolve `fut` unless its request is gone (a client that went away cancels it)."""
    if fut.done():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)
