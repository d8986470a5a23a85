"""Worker threads that run one engine tick's camera groups side by side (CPU).

On the CPU the model calls of a multi-camera tick are small tensors that two intra-op threads
barely share, and the per-camera Python work (bookkeeping, masks) runs while the model waits:
one engine over 4 cameras gave 0.77x the frames/s of 4 one-camera engines on 2 cores. Split into
``count`` groups, each run by a thread of its own with ONE torch intra-op thread, the groups
keep every core busy like separate engines would (torch ops release the GIL), while the weights
stay one copy and each group's cameras are still batched.

``TickWorkers.run(jobs)`` runs one callable per worker and returns their results in order, or
raises the first exception once every job has finished (no job is left running behind a tick).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

log = logging.getLogger(__name__)

_START_TIMEOUT_S = 30.0

Job = tuple[Callable[[], Any], "Future[Any]"]


class TickWorkers:
    """``count`` threads, each with one torch intra-op thread; the process-wide default for
    threads started later is put back once the workers are up.

    ``torch.set_num_threads`` is per thread in torch's OpenMP build, but ATen applies a thread's
    count lazily, on its first parallel call, from the count set last in the process: a worker
    that only set 1 ran its ops with the default put back after it (2 threads per group on 2
    cores, 4 on 2 cores in all). Each worker makes that first call while its own 1 is the last
    count set, then reports ready."""

    def __init__(self, count: int, name: str = "engine-group") -> None:
        if count < 1:
            raise ValueError("TickWorkers needs at least one worker")
        import torch

        default = torch.get_num_threads()
        self._queues: list[queue.Queue[Job | None]] = [queue.Queue(maxsize=1) for _ in range(count)]
        ready = [threading.Event() for _ in range(count)]
        self._threads = [
            threading.Thread(target=self._run, args=(q, r), name=f"{name}-{i}", daemon=True)
            for i, (q, r) in enumerate(zip(self._queues, ready, strict=True))
        ]
        for t in self._threads:
            t.start()
        for r in ready:
            if not r.wait(_START_TIMEOUT_S):
                raise RuntimeError("an engine group worker did not start")
        torch.set_num_threads(default)  # the default of threads started later (this one's too)

    @property
    def count(self) -> int:
        return len(self._threads)

    @staticmethod
    def _run(jobs: queue.Queue[Job | None], ready: threading.Event) -> None:
        import torch

        torch.set_num_threads(1)
        torch.get_num_threads()  # ATen's per-thread lazy set-up, now, with the count at 1
        ready.set()
        while True:
            job = jobs.get()
            if job is None:
                return
            fn, fut = job
            try:
                fut.set_result(fn())
            except BaseException as e:  # raised by run() on the engine loop
                fut.set_exception(e)
            # the job's closure and future hold the tick's frames and results: drop them now, not
            # when the next job arrives (a removed camera's last tick stayed alive here)
            del job, fn, fut

    def run(self, jobs: Sequence[Callable[[], Any]]) -> list[Any]:
        """Run ``jobs[i]`` on worker ``i`` (at most ``count`` jobs), all at once; their results in
        order. The first exception is raised after every job has finished."""
        if len(jobs) > self.count:
            raise ValueError(f"{len(jobs)} jobs for {self.count} workers")
        futures: list[Future[Any]] = []
        for q, fn in zip(self._queues, jobs, strict=False):
            fut: Future[Any] = Future()
            q.put((fn, fut))
            futures.append(fut)
        errors = [f.exception() for f in futures]  # waits for every job
        for e in errors:
            if e is not None:
                raise e
        return [f.result() for f in futures]

    def close(self) -> None:
        for q in self._queues:
            q.put(None)
        for t in self._threads:
            t.join(timeout=5.0)
            if t.is_alive():
                log.warning("engine group worker %s did not stop", t.name)
