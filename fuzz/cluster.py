"""Running campaign jobs past one process: worker processes here, or a Ray cluster.

Each job (:class:`fuzz.runner.Job`) carries its own slice of the seed space,
so workers never repeat each other's examples; each returns its statistics
and findings (replay files are written where the job says, on the worker's
host).

Errors: RuntimeError when Ray is asked for and the ``cluster`` extra is not
installed (``pip install '.[cluster]'``).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from queue import Empty
from typing import TYPE_CHECKING, Any

try:  # the Ray queue raises its own Empty
    from ray.util.queue import Empty as RayEmpty
except ImportError:  # pragma: no cover - without the cluster extra

    class RayEmpty(Exception):  # type: ignore[no-redef]
        """Never raised: Ray is not installed."""


if TYPE_CHECKING:
    from fuzz.runner import CampaignStats, Job

#: ``--ray local`` starts a Ray instance on this host instead of joining a cluster.
LOCAL = "local"


#: How often the parent looks at the workers' progress, in seconds.
POLL = 0.25
Report = Callable[[int, "CampaignStats"], None]


def _work(job: Job, queue: Any = None) -> list[CampaignStats]:
    """A worker: run the job; each batch's statistics go to ``queue`` (a progress feed) if given.

    The job's deadline was read on the shared (wall) clock by the parent, before
    this process or task started: starting it is spent from the budget too.
    """
    from fuzz.runner import run_job, shared_clock

    def progress(stats: CampaignStats) -> None:
        queue.put((job.worker, stats))

    return run_job(job, progress if queue is not None else None, shared_clock)


def _drain(queue: Any, report: Report, *, wait: float) -> None:
    """Hand every progress item waiting in ``queue`` to ``report``."""
    try:
        items = [queue.get(timeout=wait)]
        while not queue.empty():
            items.append(queue.get_nowait())
    except (Empty, RayEmpty):
        return
    for worker, stats in items:
        report(worker, stats)


def run_in_processes(jobs: list[Job], report: Report | None = None) -> list[list[CampaignStats]]:
    """One fresh process per job ("spawn": no engine state is inherited); progress to ``report``."""
    context = get_context("spawn")
    with context.Manager() as manager, ProcessPoolExecutor(len(jobs), mp_context=context) as pool:
        queue = manager.Queue() if report is not None else None
        futures = [pool.submit(_work, job, queue) for job in jobs]
        while report is not None and not all(f.done() for f in futures):
            _drain(queue, report, wait=POLL)
        if report is not None:
            _drain(queue, report, wait=0)
        return [f.result() for f in futures]


def run_on_ray(address: str, jobs: list[Job], report: Report | None = None) -> list[list[CampaignStats]]:
    """One Ray task per job on the cluster at ``address`` (or a local instance for ``local``).

    Progress travels through a Ray queue (an actor) when ``report`` is given.
    """
    try:
        import ray
        from ray.util.queue import Queue
    except ImportError as exc:
        raise RuntimeError("--ray needs the cluster extra: pip install '.[cluster]'") from exc
    started = not ray.is_initialized()
    if started:
        ray.init(address=None if address == LOCAL else address, include_dashboard=False, log_to_driver=False)
    try:
        queue = Queue() if report is not None else None
        task = ray.remote(num_cpus=1)(_work)
        pending = [task.remote(job, queue) for job in jobs]
        refs = list(pending)
        while pending:
            _done, pending = ray.wait(pending, num_returns=len(pending), timeout=POLL)
            if report is not None:
                _drain(queue, report, wait=0)
        if report is not None:
            _drain(queue, report, wait=0)
        return list(ray.get(refs))
    finally:
        if started:
            ray.shutdown()
