"""A bounded job queue and the one worker thread that runs the pipeline.

One worker: the pipeline is CPU-bound and already uses every core through torch, so a second
worker would only split the cores. The worker takes the oldest job and, when batching is on, every
queued job that can share its sampler call (same `batch_key`), up to `max_batch` images.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from t2i.params import GenerationParams
from t2i.protocol import Generator
from t2i.server.batching import batch_key, expand, generate_batch, png_bytes

KEEP_FINISHED = 256  # finished jobs kept for polling (GET /api/jobs/<id>)


PREVIEW_EVERY = 0.3  # seconds between live previews: one decode each, a small share of a step


class QueueFull(Exception):
    """The queue holds max_queue jobs already; the caller should retry after `retry_after` s."""

    def __init__(self, retry_after: int):
        super().__init__(f"queue full; retry after {retry_after} s")
        self.retry_after = retry_after


class _Cancelled(Exception):
    pass


@dataclass
class Job:
    """One request: n images of `params` (seeds seed .. seed + n - 1) from model `model`."""

    model: str
    params: GenerationParams
    n: int = 1
    format: str = "json"  # of the answer: "json" (base64) or "png"
    id: str = ""
    status: str = "queued"  # queued -> running -> done | failed | cancelled
    step: int = 0
    error: str = ""
    images: list[tuple[GenerationParams, bytes]] = field(default_factory=list)
    created: float = field(default_factory=time.monotonic)
    seconds: float = 0.0  # submit -> finished
    batch_images: int = 0  # images in the sampler call that made this job
    preview: bytes = b""  # PNG of its first image's denoised estimate so far (live preview)
    uploads: list[Path] = field(default_factory=list)  # init / mask files, removed when finished
    done: threading.Event = field(default_factory=threading.Event)

    def finish(self, status: str, error: str = "") -> None:
        self.status, self.error = status, error
        self.seconds = time.monotonic() - self.created
        for path in self.uploads:
            path.unlink(missing_ok=True)
        self.done.set()


class JobQueue:
    """Bounded FIFO of Jobs served by one worker thread; `timeout` s from submit to finish."""

    def __init__(
        self,
        pipes: dict[str, Generator],
        max_queue: int = 32,
        max_batch: int = 16,
        timeout: float = 120.0,
    ):
        self.pipes, self.timeout = pipes, timeout
        self.max_queue, self.max_batch = max_queue, max_batch
        self._pending: list[Job] = []
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._cond = threading.Condition()
        self._stop = False
        self.seconds_per_image = 1.0  # running mean, for Retry-After
        self.served = 0
        self._worker = threading.Thread(target=self._run, name="t2i-worker", daemon=True)
        self._worker.start()

    # ------------------------------------------------------------ callers

    def submit(self, job: Job) -> Job:
        with self._cond:
            if len(self._pending) >= self.max_queue:
                raise QueueFull(self.retry_after())
            job.id = secrets.token_urlsafe(12)  # unguessable: ids are capabilities
            self._pending.append(job)
            self._jobs[job.id] = job
            while len(self._jobs) > self.max_queue + KEEP_FINISHED:
                self._jobs.popitem(last=False)
            self._cond.notify()
        return job

    def get(self, job_id: str) -> Job | None:
        with self._cond:
            return self._jobs.get(job_id)

    def position(self, job: Job) -> int:
        """0 when running or finished, else 1 + the jobs ahead of it."""
        with self._cond:
            return self._pending.index(job) + 1 if job in self._pending else 0

    def cancel(self, job: Job, reason: str) -> None:
        """A queued job leaves the queue; a running one stops at its batch's next step if all
        jobs of that batch are cancelled."""
        with self._cond:
            if job in self._pending:
                self._pending.remove(job)
                job.finish("cancelled", reason)
            elif job.status == "running":
                job.error = reason
                job.status = "cancelling"

    @staticmethod
    def _previews(pipe: Generator, batch: list[Job], info: dict) -> None:
        """Each job's first image as it stands, a PNG (a preview that fails is skipped: it must
        never fail the generation)."""
        start = 0
        for job in batch:
            try:
                image = pipe.preview(info, start)
                if image is not None:
                    job.preview = png_bytes(image, job.params)
            except Exception:  # noqa: BLE001 - a preview is a courtesy
                job.preview = b""
            start += job.n

    def running(self) -> list[Job]:
        """The jobs the worker is sampling now (one batch)."""
        with self._cond:
            return [j for j in self._jobs.values() if j.status in ("running", "cancelling")]

    def retry_after(self) -> int:
        images = sum(j.n for j in self._pending)
        return max(1, round(images * self.seconds_per_image))

    def stats(self) -> dict:
        with self._cond:
            queued = len(self._pending)
        return {"queued": queued, "max_queue": self.max_queue, "served": self.served}

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._worker.join(timeout=10)

    # ------------------------------------------------------------ worker

    def _take(self) -> list[Job] | None:
        """Block until work: the oldest job plus the compatible ones queued behind it."""
        with self._cond:
            while not self._pending and not self._stop:
                self._cond.wait()
            if self._stop:
                return None
            first = self._pending.pop(0)
            batch, images = [first], first.n
            key = (first.model, batch_key(first.params))
            for job in list(self._pending):
                if images + job.n > self.max_batch:
                    break
                if (job.model, batch_key(job.params)) == key:
                    self._pending.remove(job)
                    batch.append(job)
                    images += job.n
            for job in batch:
                job.status = "running"
            return batch

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            now = time.monotonic()
            live = []
            for job in batch:
                if now - job.created > self.timeout:
                    job.finish("cancelled", f"waited longer than the timeout ({self.timeout} s)")
                else:
                    live.append(job)
            if live:
                self._serve(live)

    def _serve(self, batch: list[Job]) -> None:
        items = [p for job in batch for p in expand(job.params, job.n)]
        deadline = min(job.created for job in batch) + self.timeout
        start = time.monotonic()

        pipe, last_preview = self.pipes[batch[0].model], [0.0]

        def progress(info: dict) -> None:
            for job in batch:
                job.step = info["i"] + 1
            if time.monotonic() - last_preview[0] > PREVIEW_EVERY:
                self._previews(pipe, batch, info)
                last_preview[0] = time.monotonic()
            if all(job.status == "cancelling" for job in batch):
                raise _Cancelled(batch[0].error)
            if time.monotonic() > deadline:
                raise _Cancelled(f"generation exceeded the timeout ({self.timeout} s)")

        try:
            x = generate_batch(self.pipes[batch[0].model], items, progress)
        except _Cancelled as err:
            for job in batch:
                job.finish("cancelled", str(err))
            return
        except Exception as err:  # a failed batch must not kill the worker
            if len(batch) > 1:  # nor fail the jobs batched with the one that broke it
                for job in batch:
                    self._serve([job])
                return
            batch[0].finish("failed", f"{type(err).__name__}: {err}")
            return
        elapsed = time.monotonic() - start
        self.seconds_per_image = 0.8 * self.seconds_per_image + 0.2 * elapsed / len(items)
        i, digest = 0, self.pipes[batch[0].model].model_hash
        for job in batch:
            job.images = [
                (p, png_bytes(x[i + k], p, digest)) for k, p in enumerate(items[i : i + job.n])
            ]
            job.batch_images = len(items)
            i += job.n
            job.finish("done" if job.status == "running" else "cancelled", job.error)
        self.served += len(batch)
