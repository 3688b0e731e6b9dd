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
