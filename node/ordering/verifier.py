"""The expensive half of admission off the event loop: registry state checks and Ed25519
signature checks of txs run on a few worker threads (PyNaCl releases the GIL while it
verifies), so a flood of txs to check never stalls consensus, gossip or the client API.

Rules it keeps:
- work comes in chunks, each tagged with its source (a peer org or a client connection); one
  queue per source, and the workers take the next chunk from the sources in turn, so a source
  with much work waiting delays another source by at most one chunk per worker;
- a source's queued chunks can be dropped at once (`drop_queued`: the source was throttled);
- with `threads=0` a chunk runs at once on the calling thread (the in-process pipeline
  benchmark times admission on one thread);
- nothing here touches the mempool: the caller adds survivors on the loop.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


class Dropped(Exception):
    """The chunk was dropped before it ran (its source was throttled, or the verifier closed)."""


@dataclass(slots=True)
class _Job(Generic[T]):
    work: Callable[[], T]
    done: asyncio.Future[T]


class FairVerifier:
    def __init__(self, threads: int) -> None:
        assert threads >= 0
        self._threads = threads
        self._pool = ThreadPoolExecutor(threads, "kledger-verify") if threads else None
        self._queues: OrderedDict[str, deque[_Job[object]]] = OrderedDict()
        self._ready: asyncio.Event | None = None
        self._workers: list[asyncio.Task[None]] = []

    def queued(self, source: str) -> int:
        return len(self._queues.get(source, ()))

    async def run(self, source: str, work: Callable[[], T]) -> T:
        """`work()` on a worker thread, in `source`'s turn; raises Dropped if dropped first."""
        if self._pool is None:
            return work()
        if not self._workers:
            self._start()
        assert self._ready is not None
        done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(source, deque()).append(_Job(work, done))  # type: ignore[arg-type]
        self._ready.set()
        return await done

    def drop_queued(self, source: str) -> int:
        """Drop every chunk of `source` not yet started; returns how many."""
        jobs = self._queues.pop(source, deque())
        for job in jobs:
            if not job.done.done():
                job.done.set_exception(Dropped(source))
        return len(jobs)

    async def close(self) -> None:
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers.clear()
        for source in list(self._queues):
            self.drop_queued(source)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def _start(self) -> None:
        self._ready = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._workers = [
            loop.create_task(self._work(), name=f"verify-{i}") for i in range(self._threads)
        ]

    def _next(self) -> _Job[object] | None:
        """The first waiting chunk of the source whose turn it is; that source goes last."""
        while self._queues:
            source, jobs = next(iter(self._queues.items()))
            job = jobs.popleft()
            if jobs:
                self._queues.move_to_end(source)
            else:
                del self._queues[source]
            if not job.done.done():  # its waiter may have been cancelled
                return job
        return None

    async def _work(self) -> None:
        assert self._ready is not None and self._pool is not None
        loop = asyncio.get_running_loop()
        while True:
            job = self._next()
            if job is None:
                self._ready.clear()
                await self._ready.wait()
                continue
            try:
                result = await loop.run_in_executor(self._pool, job.work)
            except asyncio.CancelledError:
                if not job.done.done():
                    job.done.set_exception(Dropped("verifier closed"))
                raise
            except Exception as exc:  # the caller's to handle, with its context
                if not job.done.done():
                    job.done.set_exception(exc)
            else:
                if not job.done.done():
                    job.done.set_result(result)
