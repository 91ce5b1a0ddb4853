"""The CPU pool: the requests' CPU work (tokenising, checking JSON bodies) in worker processes of
its own, one piece at a time, the tenants taken in turn.

A piece is a few milliseconds of one core (:mod:`titans_server.cpu_jobs`). After each, the job
goes to the back of its tenant's line and the next tenant with work goes first, so one tenant's
hundred megabytes wait behind another's one-line chat for at most one piece per worker. A job
whose request is gone (its client left, a limit was passed) is dropped at its next turn, and a
tenant may hold at most ``per_tenant`` jobs: more is :class:`PoolBusy` (a 429).
"""

from __future__ import annotations

import asyncio
import logging
import marshal
import sys
from collections import deque
from collections.abc import Awaitable
from contextlib import suppress
from dataclasses import dataclass, field

from titans_server.cpu_jobs import Job

log = logging.getLogger("titans_server")


class PoolBusy(Exception):
    """The tenant already holds as many CPU jobs as it may."""


class Abandoned(Exception):
    """The request's client left before its CPU work was done; the work was dropped."""


@dataclass(eq=False)
class _Work:
    tenant: str
    job: Job
    done: asyncio.Future
    reply: object = None
    dropped: bool = field(default=False)


class _Worker:
    """One worker process and the frames to and from it."""

    def __init__(self, tokenizer_json: str):
        self.tokenizer_json = tokenizer_json
        self.process: asyncio.subprocess.Process | None = None

    async def call(self, request: tuple) -> object:
        if self.process is None or self.process.returncode is not None:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "titans_server.cpu_worker",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            self._write(self.tokenizer_json)
        self._write(request)
        try:
            head = await self.process.stdout.readexactly(8)
            return marshal.loads(await self.process.stdout.readexactly(int.from_bytes(head, "little")))
        except (asyncio.IncompleteReadError, ConnectionError) as error:
            self.process.kill()  # a fresh one next time
            raise RuntimeError("the CPU worker process died") from error

    def _write(self, payload: object) -> None:
        data = marshal.dumps(payload)
        self.process.stdin.write(len(data).to_bytes(8, "little") + data)

    async def close(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 5)
        except asyncio.TimeoutError:
            self.process.kill()
            await self.process.wait()


class CpuPool:
    """``workers`` processes serving every tenant's jobs in turn (see the module docstring)."""

    def __init__(self, tokenizer_json: str, workers: int, per_tenant: int):
        self.per_tenant = per_tenant
        self._workers = [_Worker(tokenizer_json) for _ in range(workers)]
        self._turns: dict[str, deque[_Work]] = {}  # tenants with work waiting, in turn order
        self._held: dict[str, int] = {}
        self._ready = asyncio.Event()
        self._loops: list[asyncio.Task] = []

    def start(self) -> None:
        self._loops = [asyncio.ensure_future(self._serve(worker)) for worker in self._workers]

    async def close(self) -> None:
        for loop in self._loops:
            loop.cancel()
        for loop in self._loops:
            with suppress(asyncio.CancelledError):
                await loop
        for worker in self._workers:
            await worker.close()

    @property
    def jobs(self) -> int:
        """Jobs waiting or at work, every tenant's (a dropped one until its turn comes)."""
        return sum(self._held.values())

    def held(self, tenant: str) -> int:
        """The tenant's jobs waiting or at work."""
        return self._held.get(tenant, 0)

    async def run(self, tenant: str, job: Job, gone: Awaitable | None = None) -> object:
        """``job``'s result, in the tenant's turn. The job is dropped when this is cancelled or when
        ``gone`` (the client's disconnection) completes first: then :class:`Abandoned`."""
        if self.held(tenant) >= self.per_tenant:
            job.close()
            raise PoolBusy(f"this API key has {self.per_tenant} requests being tokenised; try again shortly")
        work = _Work(tenant, job, asyncio.get_running_loop().create_future())
        self._held[tenant] = self.held(tenant) + 1
        self._queue(work)
        watch = asyncio.ensure_future(gone) if gone is not None else None
        try:
            waiting = {work.done} if watch is None else {work.done, watch}
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if not work.done.done():
                raise Abandoned("the client left")
            return work.done.result()
        finally:
            work.dropped = True
            if watch is not None:
                watch.cancel()

    def _queue(self, work: _Work) -> None:
        self._turns.setdefault(work.tenant, deque()).append(work)
        self._ready.set()

    async def _next(self) -> _Work:
        """The next tenant's next job; that tenant goes to the back of the line."""
        while not self._turns:
            self._ready.clear()
            await self._ready.wait()
        tenant = next(iter(self._turns))
        line = self._turns.pop(tenant)
        work = line.popleft()
        if line:
            self._turns[tenant] = line
        return work

    async def _serve(self, worker: _Worker) -> None:
        while True:
            work = await self._next()
            if work.dropped:
                self._end(work, None)
                continue
            try:
                request = work.job.send(work.reply)
            except StopIteration as finished:
                self._end(work, finished.value)
                continue
            except Exception as error:
                self._end(work, error)
                continue
            try:
                work.reply = await worker.call(request)
            except Exception as error:
                log.exception("CPU worker failed")
                self._end(work, error)
                continue
            self._queue(work)

    def _end(self, work: _Work, result: object) -> None:
        work.job.close()
        self._held[work.tenant] -= 1
        if not self._held[work.tenant]:
            del self._held[work.tenant]
        if work.done.done() or work.dropped:  # nobody waits for it
            return
        if isinstance(result, BaseException):
            work.done.set_exception(result)
        else:
            work.done.set_result(result)


async def disconnected(receive) -> None:
    """Return when the client of a request whose body has been read closes its connection
    (``receive`` is the request's ASGI receive; nothing else reads it meanwhile)."""
    while (await receive())["type"] != "http.disconnect":
        pass
