"""Campaign workers on Ray (the `cluster` extra), on a local Ray instance as on one node of a cluster.

Ray 2.60 (the pinned release) no longer has a "local mode": ``--ray local``
starts a real single-node instance and shuts it down after the run.
"""

from __future__ import annotations

import pytest

from fuzz.runner import run

ray = pytest.importorskip("ray", reason="the cluster extra (pip install '.[cluster]') is not installed")


def test_workers_on_a_local_ray_instance_do_the_same_work_as_worker_processes() -> None:
    on_ray = run(["hypercalls", "code"], seed=6, examples=4, workers=2, ray_address="local")
    assert on_ray.workers == 2 and on_ray.findings == []
    assert not ray.is_initialized()  # the run started its instance and shut it down
    in_processes = run(["hypercalls", "code"], seed=6, examples=4, workers=2)
    for name in ("hypercalls", "code"):
        assert on_ray.campaigns[name].examples == 4  # two workers, two examples each
        assert on_ray.campaigns[name].executions == in_processes.campaigns[name].executions
