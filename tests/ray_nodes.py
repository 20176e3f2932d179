"""Two Ray nodes on this host's loopback, each with its own resources, temp dir and
`MATHRL_NODE_DIR`, for as long as this process lives (stdin closed or SIGTERM ends it).

`ray start` cannot do this here: it turns 127.0.0.1 into the machine's external address, and
with `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` (which keeps loopback) it refuses a second node.
Ray's own multi-node test harness (`ray.cluster_utils.Cluster`) starts the same raylets and
object stores a `ray start --address` would, on 127.0.0.1. Prints the GCS address, then one
line per node: `node <id> <node dir>`.

    python tests/ray_nodes.py HEAD_TEMP HEAD_DIR WORKER_TEMP WORKER_DIR
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path


def main(head_temp: str, head_dir: str, worker_temp: str, worker_dir: str) -> None:
    # Cluster records its address under $RAY_TMPDIR/ray; keep that file in our own folder.
    os.environ["RAY_TMPDIR"] = head_temp
    (Path(head_temp) / "ray").mkdir(parents=True, exist_ok=True)
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, shutdown_at_exit=True, head_node_args=dict(
        node_ip_address="127.0.0.1", num_cpus=2, resources={"learner": 1, "generator": 1},
        temp_dir=head_temp, include_dashboard=False, env_vars={"MATHRL_NODE_DIR": head_dir}))
    worker = cluster.add_node(
        node_ip_address="127.0.0.1", num_cpus=1, resources={"generator": 1},
        temp_dir=worker_temp, env_vars={"MATHRL_NODE_DIR": worker_dir})
    print(cluster.gcs_address, flush=True)
    print(f"node {cluster.head_node.node_id} {head_dir}", flush=True)
    print(f"node {worker.node_id} {worker_dir}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        sys.stdin.read()
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:5])
