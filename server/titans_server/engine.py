"""The engine: one thread that owns the model and runs every session's work in batched steps.

Requests become jobs: tokens to feed (a prompt, a document) and then, for generation, tokens to
sample one step at a time. Each loop turn runs one prefill piece (up to ``prefill_piece_tokens``)
and one decode step for every generating job, stacking the states of jobs at the same position
into one forward. Jobs report back to the event loop through thread-safe callbacks, so HTTP stays
responsive while the model works. A job never touches the store: the API commits its final state.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from titans_core import ModelState, SamplingParams, TitansLM
from titans_core.generation import sample

log = logging.getLogger("titans_server")


class EngineOverloaded(Exception):
    """Too many jobs are queued or running."""


class NotFinite(Exception):
    """A job's logits or loss are not finite: its session's memory is poisoned or diverged. The job
    fails alone; the other jobs of its batch go on (each row of a batched step is its own)."""


@dataclass(frozen=True)
class Fed:
    """A piece of an ingestion, measured: each token's next-token loss (None for a document's first
    token, which nothing predicted) and the strength of its write into the memory."""

    tokens_done: int
    losses: list[float | None]
    writes: list[float]


@dataclass(eq=False)  # jobs are compared by identity (their fields hold tensors)
class Job:
    """A unit of model work for one session; the engine thread owns it until it finishes."""

    state: ModelState | None
    feed: list[int]  # tokens to consume before sampling (or, for ingestion, at all), from ``fed`` on
    params: SamplingParams | None  # None: consume only (ingestion)
    epilogue: Callable[[list[int]], list[int]] | None = None  # tokens fed after the reply
    min_tokens: int = 0
    ignore_eos: bool = False
    measure: bool = False  # ingestion: measure each fed token (:class:`Fed`), given to ``on_progress``
    on_token: Callable[[int], None] | None = None
    on_progress: Callable[[Fed], None] | None = None
    on_done: Callable[[Job], None] | None = None
    generated: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    error: BaseException | None = None
    fed: int = 0  # tokens of ``feed`` consumed: an index, so a 10 MB document is never re-copied

    @property
    def feeding(self) -> bool:
        return self.fed < len(self.feed)

    cancelled: bool = False
    stop_requested: bool = False
    _pending: int | None = None  # a sampled token not yet fed
    _logits: torch.Tensor | None = None
    _generator: torch.Generator | None = None

    def cancel(self) -> None:
        """Drop the job (the client went away): no state results."""
        self.cancelled = True

    def stop(self) -> None:
        """Finish early (a stop string matched): the state still takes in every token produced."""
        self.stop_requested = True


class Engine:
    """Owns the model on its device; ``submit`` jobs from the event loop."""

    def __init__(
        self, model: TitansLM, *, max_batch_size: int, max_queue: int, piece_tokens: int, threads: int
    ):
        self.model = model.eval()
        self.threads = threads
        self.vocab = model.tokenizer.vocab_size
        self.device = model.embed.weight.device
        self.max_batch_size, self.max_queue, self.piece_tokens = max_batch_size, max_queue, piece_tokens
        self._inbox: queue.Queue[Job | None] = queue.Queue()
        self._active: list[Job] = []
        self._count = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="titans-engine", daemon=True)
        self.step_observer: Callable[[str, int, float], None] | None = None  # (kind, batch, seconds)

    @property
    def load(self) -> int:
        """Jobs queued or running."""
        return self._count

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> bool:
        """Fail what is left at the end of the current step; False if that step outlasts ``timeout``.

        A step cannot be interrupted, and on a loaded machine one prefill piece can take longer
        than ``docker stop`` waits: the server then exits without the thread (see ``__main__``),
        which is safe, because the engine never commits anything itself.
        """
        self._inbox.put(None)
        self._thread.join(timeout)
        return not self.running

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def submit(self, job: Job) -> None:
        if job.params is not None:
            job._generator = torch.Generator(device=self.device)
            if job.params.seed is None:
                job._generator.seed()
            else:
                job._generator.manual_seed(job.params.seed)
        with self._lock:
            if self._count >= self.max_queue:
                raise EngineOverloaded(f"{self._count} requests are queued or running; try again shortly")
            self._count += 1
        self._inbox.put(job)

    async def run(self, job: Job) -> Job:
        """Submit ``job`` and wait for it; callbacks given to the job run on this event loop."""
        loop = asyncio.get_running_loop()
        finished = loop.create_future()
        for name in ("on_token", "on_progress"):
            callback = getattr(job, name)
            if callback is not None:
                setattr(job, name, lambda value, c=callback: loop.call_soon_threadsafe(c, value))
        job.on_done = lambda j: loop.call_soon_threadsafe(_resolve, finished, j)
        self.submit(job)
        try:
            return await asyncio.shield(finished)
        except asyncio.CancelledError:
            job.cancel()
            raise

    def _run(self) -> None:
        torch.set_grad_enabled(False)
        torch.set_num_threads(self.threads)  # per thread: the HTTP thread keeps one (see app.py)
        while True:
            try:
                incoming = self._inbox.get(timeout=None if not self._active else 0)
            except queue.Empty:
                incoming = False
            if incoming is None:
                for job in list(self._active):
                    job.error = RuntimeError("the server is shutting down")
                    self._finish(job)
                return
            if incoming:
                self._active.append(incoming)
                while True:  # take everything waiting, so it joins this turn's batch
                    try:
                        more = self._inbox.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        self._inbox.put(None)
                        break
                    self._active.append(more)
            self._turn()

    def _turn(self) -> None:
        for job in [j for j in self._active if j.cancelled]:
            self._finish(job)
        feeding = [j for j in self._active if j.feeding]
        if feeding:
            job = feeding[0]  # then to the back of the line: long documents take turns with prompts
            self._active.remove(job)
            self._active.append(job)
            self._guarded([job], self._prefill, job)
        decoding = [j for j in self._active if not j.feeding and j._pending is not None]
        for start in range(0, len(decoding), self.max_batch_size):
            batch = decoding[start : start + self.max_batch_size]
            self._guarded(batch, self._decode, batch)
        for job in [j for j in self._active if not j.feeding and j._pending is None]:
            self._finish(job)

    def _guarded(self, jobs: list[Job], step: Callable, argument) -> None:
        """Run one step; if it fails (out of memory, a bug), only its own jobs fail."""
        try:
            step(argument)
        except Exception as error:
            log.exception("engine step failed for %d job(s)", len(jobs))
            for job in jobs:
                job.error = error
                self._finish(job)

    def _forward(self, kind: str, tokens: torch.Tensor, state, logits: str):
        begin = time.perf_counter()
        with torch.inference_mode():
            out = self.model(tokens, state, logits=logits)
        if self.step_observer is not None:
            self.step_observer(kind, tokens.shape[0], time.perf_counter() - begin)
        return out

    def _prefill(self, job: Job) -> None:
        piece = job.feed[job.fed : job.fed + self.piece_tokens]
        tokens = torch.tensor([piece], dtype=torch.int64, device=self.device)
        fed = None
        if job.measure:
            with self.model.recording_writes() as writes:
                logits, new_state = self._forward("prefill", tokens, job.state, "all")
            if not torch.isfinite(logits).all():
                raise NotFinite("the model's output went non-finite on this session's memory")
            if job._logits is None:  # the document's first token: nothing predicted it
                before, targets, unpredicted = logits[0, :-1], tokens[0, 1:], [None]
            else:  # the piece's first token, predicted by the last piece
                before, targets, unpredicted = torch.cat([job._logits[0, -1:], logits[0, :-1]]), tokens[0], []
            losses = torch.nn.functional.cross_entropy(before, targets, reduction="none")
            fed = (unpredicted + losses.tolist(), writes.strengths()[0].tolist())
            job._logits = logits[:, -1:]
        else:
            last_piece = job.fed + len(piece) == len(job.feed)
            want = "last" if job.params is not None and last_piece else "none"
            job._logits, new_state = self._forward("prefill", tokens, job.state, want)
        job.state = new_state
        job.fed += len(piece)
        if job.on_progress is not None:
            job.on_progress(Fed(job.fed, *(fed or ([], []))))
        if not job.feeding and job.params is not None and job.finish_reason is None:
            if not torch.isfinite(job._logits[:, -1]).all():  # a prefill runs alone: it fails alone
                raise NotFinite("the model's output went non-finite on this session's memory")
            self._choose(job, job._logits[:, -1])

    def _decode(self, jobs: list[Job]) -> None:
        """One token for every job, whatever their positions: one batched forward."""
        begin = time.perf_counter()
        tokens = torch.tensor([j._pending for j in jobs], dtype=torch.int64, device=self.device)
        states = [j.state for j in jobs]  # every decoding job has fed its prompt
        with torch.inference_mode():
            logits, states = self.model.decode(tokens, states)
        if self.step_observer is not None:
            self.step_observer("decode", len(jobs), time.perf_counter() - begin)
        finite = torch.isfinite(logits).flatten(1).all(dim=1).tolist()
        for row, (job, new_state) in enumerate(zip(jobs, states)):
            if not finite[row]:
                job.error = NotFinite("the model's output went non-finite on this session's memory")
                self._finish(job)
                continue
            job.state, job._pending = new_state, None
            if job.finish_reason is None and job.stop_requested:
                job.finish_reason = "stop"
            if job.finish_reason is None:
                self._choose(job, logits[row : row + 1])
            else:  # the last sampled token is now in the state: close the turn
                job.feed = [*job.feed, *(job.epilogue(job.generated) if job.epilogue else [])]

    def _choose(self, job: Job, logits: torch.Tensor) -> None:
        """Sample the next token; it is fed on the next decode step."""
        params = job.params
        # Ids past the tokenizer's (a model may have spare embedding rows) have no text: never pick them.
        token = int(sample(logits[..., : self.vocab], params, job._generator)[0])
        job.generated.append(token)
        job._pending = token
        if job.on_token is not None:
            job.on_token(token)
        may_stop = not job.ignore_eos and len(job.generated) >= job.min_tokens
        if may_stop and token in params.stop_token_ids:
            job.finish_reason = "stop"
        elif len(job.generated) >= params.max_new_tokens:
            job.finish_reason = "length"

    def _finish(self, job: Job) -> None:
        if job in self._active:
            self._active.remove(job)
            with self._lock:
                self._count -= 1
        if job.on_done is not None:
            job.on_done(job)


def _resolve(future: asyncio.Future, job: Job) -> None:
    if not future.done():
        future.set_result(job)
