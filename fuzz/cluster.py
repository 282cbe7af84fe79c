"""Running campaign jobs past one process: worker processes here, or a Ray cluster.

Each job (:class:`fuzz.runner.Job`) carries its own slice of the seed space,
so workers never repeat each other's examples; each returns its statistics
and findings (replay files are written where the job says, on the worker's
host).

Errors: RuntimeError when Ray is asked for and the ``cluster`` extra is not
installed (``pip install '.[cluster]'``).
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fuzz.runner import CampaignStats, Job

#: ``--ray local`` starts a Ray instance on this host instead of joining a cluster.
LOCAL = "local"


def _work(job: Job) -> list[CampaignStats]:
    from fuzz.runner import run_job

    return run_job(job)


def run_in_processes(jobs: list[Job]) -> list[list[CampaignStats]]:
    """One fresh process per job ("spawn": no engine state is inherited)."""
    with ProcessPoolExecutor(max_workers=len(jobs), mp_context=get_context("spawn")) as pool:
        return list(pool.map(_work, jobs))


def run_on_ray(address: str, jobs: list[Job]) -> list[list[CampaignStats]]:
    """One Ray task per job on the cluster at ``address`` (or a local instance for ``local``)."""
    try:
        import ray
    except ImportError as exc:
        raise RuntimeError("--ray needs the cluster extra: pip install '.[cluster]'") from exc
    started = not ray.is_initialized()
    if started:
        ray.init(address=None if address == LOCAL else address, include_dashboard=False, log_to_driver=False)
    try:
        task = ray.remote(num_cpus=1)(_work)
        return list(ray.get([task.remote(job) for job in jobs]))
    finally:
        if started:
            ray.shutdown()
