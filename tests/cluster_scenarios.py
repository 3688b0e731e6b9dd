"""Runs tilewave on a real multi-node Ray cluster on this machine (``ray.cluster_utils.
Cluster``: one head and three worker nodes of one CPU each, every node its own raylet),
in a process of its own because a test process may be connected to another Ray instance.

    python tests/cluster_scenarios.py INPUT.zarr WORKDIR      # prints one JSON line

Scenarios, each writing WORKDIR/<name>.zarr:

``spread``       two workers; records which node each actor ran on.
``remove_node``  two workers; once tiles are done, the node of one actor is removed (its
                 raylet and every process on it die); the actor restarts on the spare node.
``s3``           with a third argument, an ``s3://`` copy of the input: two workers on two
                 nodes read it and write ``s3://.../cluster_out.zarr`` (credentials from the
                 environment, which every node's processes inherit here).
``two_jobs``     two ``tilewave upscale`` drivers at once on the same cluster and input (the
                 input 4 x 4 times over), into ``two_a.zarr`` and ``two_b.zarr``, one worker
                 each; while both run, a third on ``two_a.zarr`` must be refused. Records
                 the Ray jobs their actors belonged to, and compares both outputs with the
                 same job run alone.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time


def _actor_nodes(alive_only: bool = False) -> list[str]:
    from ray.util.state import list_actors

    filters = [("class_name", "=", "TileWorker")] + ([("state", "=", "ALIVE")] if alive_only else [])
    return sorted({a.node_id for a in list_actors(filters=filters, detail=True, limit=1000)})


def _two_jobs(small: str, work: str, address: str) -> dict:
    import subprocess

    import numpy as np
    import zarr
    from ray.util.state import list_actors

    # Long enough (the input 4 x 4 times over) for both jobs to be seen running at once.
    pixels = np.tile(zarr.open_array(small, mode="r")[:], (1, 4, 4))
    source = os.path.join(work, "two_in.zarr")
    zarr.create_array(source, shape=pixels.shape, chunks=(3, 24, 24), dtype=pixels.dtype,
                      dimension_names=("c", "y", "x"))[:] = pixels

    def start(name: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "tilewave.cli", "upscale", source, os.path.join(work, name),
             "--model", "span-x2", "--tile", "24", "--workers", "1", "--address", address,
             "--quiet", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    first, second = start("two_a.zarr"), start("two_b.zarr")
    ledgers = [os.path.join(work, name, ".tilewave", "ledger.log") for name in ("two_a.zarr", "two_b.zarr")]
    deadline = time.time() + 300
    while not all(os.path.exists(p) and sum(1 for _ in open(p)) >= 2 for p in ledgers):
        if time.time() > deadline or first.poll() is not None or second.poll() is not None:
            raise RuntimeError(f"a job made no progress: {first.communicate()} {second.communicate()}")
        time.sleep(0.05)
    jobs = sorted({a.job_id for a in list_actors(filters=[("class_name", "=", "TileWorker"),
                                                          ("state", "=", "ALIVE")],
                                                 detail=True, limit=1000)})
    import tilewave
    from tilewave.errors import OutputBusyError

    try:  # refused before anything starts, so the first job is still running
        tilewave.upscale(source, os.path.join(work, "two_a.zarr"), model="span-x2", tile=24,
                         workers=1, address=address, resume=True, progress=False)
        third = "not refused"
    except OutputBusyError as exc:
        third = str(exc)
    running = first.poll() is None
    outs = [p.communicate(timeout=600) for p in (first, second)]
    # The same job alone, for the bytes both must have.
    alone = start("two_alone.zarr")
    alone.communicate(timeout=600)
    arrays = [zarr.open_array(os.path.join(work, n), path="0")[:]
              for n in ("two_a.zarr", "two_b.zarr", "two_alone.zarr")]
    return {"codes": [first.returncode, second.returncode, alone.returncode],
            "errors": [o[1][-500:] for o in outs], "actor_jobs_while_both_ran": jobs,
            "third": third, "first_ran_through_the_refusal": running,
            "equal_to_alone": [bool(np.array_equal(a, arrays[2])) for a in arrays[:2]]}


def main() -> None:
    import ray
    from ray.cluster_utils import Cluster

    import tilewave

    source, work = sys.argv[1], sys.argv[2]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    nodes = [cluster.add_node(num_cpus=1) for _ in range(3)]
    cluster.wait_for_nodes()
    result: dict = {"nodes": [n.node_id for n in nodes]}
    try:
        os.environ["RAY_ADDRESS"] = cluster.address
        report = tilewave.upscale(source, os.path.join(work, "spread.zarr"), model="span-x2",
                                  tile=24, workers=2, address=cluster.address, progress=False)
        result["spread"] = {"tiles": report.tiles, "workers": report.workers,
                            "actor_nodes": _actor_nodes()}

        out = os.path.join(work, "remove_node.zarr")
        removed: list[str] = []

        def remove_busy_node() -> None:
            ledger = os.path.join(out, ".tilewave", "ledger.log")
            deadline = time.time() + 300
            while time.time() < deadline:
                if os.path.exists(ledger) and sum(1 for _ in open(ledger)) >= 6:
                    busy = set(_actor_nodes(alive_only=True))
                    victim = next(n for n in nodes if n.node_id in busy)
                    cluster.remove_node(victim, allow_graceful=False)
                    removed.append(victim.node_id)
                    return
                time.sleep(0.05)

        killer = threading.Thread(target=remove_busy_node)
        killer.start()
        report = tilewave.upscale(source, out, model="span-x2", tile=24, workers=2,
                                  address=cluster.address, progress=False)
        killer.join()
        result["remove_node"] = {"tiles": report.tiles, "removed": removed}

        # One CPU for each of the two jobs, whatever the node removal above left.
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        result["two_jobs"] = _two_jobs(source, work, cluster.address)

        if len(sys.argv) > 3:
            remote = sys.argv[3]
            target = remote.rsplit("/", 1)[0] + "/cluster_out.zarr"
            report = tilewave.upscale(remote, target, model="span-x2", tile=24, workers=2,
                                      address=cluster.address, progress=False)
            result["s3"] = {"output": target, "tiles": report.tiles}
    finally:
        ray.shutdown()
        cluster.shutdown()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
