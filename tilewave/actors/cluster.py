"""Connecting to Ray: an existing cluster by address, or an embedded local instance."""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass

#: Object store for an embedded local instance; contexts spill to disk beyond it.
LOCAL_OBJECT_STORE_BYTES = 512 * 1024**2


@dataclass(frozen=True)
class ClusterInfo:
    cpus: float
    gpus: float
    started_here: bool


def connect(address: str | None = None, num_cpus: int | None = None) -> ClusterInfo:
    """Join the Ray cluster at ``address`` (``auto`` finds a running one; None: the one
    ``RAY_ADDRESS`` names, if any) or start a local instance; reuses an instance this
    process already joined."""
    import ray

    from ..errors import SettingsError

    # Ray itself would join RAY_ADDRESS's cluster too, then refuse the local num_cpus.
    address = address or os.environ.get("RAY_ADDRESS") or None
    started = False
    if not ray.is_initialized():
        kwargs: dict = {"include_dashboard": False, "logging_level": logging.WARNING,
                        "log_to_driver": False, "configure_logging": True}
        if address:
            probe(address)
            try:
                ray.init(address=address, **kwargs)
            except (ConnectionError, RuntimeError) as exc:
                raise SettingsError(f"cannot join the Ray cluster at {address!r} ({exc}); "
                                    "check --address (or RAY_ADDRESS)") from None
        else:
            # The notice that token authentication is on, and the one that a start from a
            # thread (the job starts Ray while it copies the input) sets no SIGTERM
            # handler, say nothing actionable about an instance that lives and dies with
            # this process.
            notices = [logging.getLogger(name) for name in
                       ("ray._private.authentication.authentication_token_setup", "ray._private.worker")]
            levels = [n.level for n in notices]
            for notice in notices:
                notice.setLevel(logging.ERROR)
            try:
                ray.init(num_cpus=num_cpus or os.cpu_count() or 1,
                         object_store_memory=LOCAL_OBJECT_STORE_BYTES, **kwargs)
            except KeyboardInterrupt:
                # Interrupted half-way, Ray leaves its daemons running for a minute or more.
                ray.shutdown()
                raise
            except OSError as exc:
                if "AF_UNIX path length" not in str(exc):
                    raise
                raise SettingsError(
                    f"Ray's socket paths under {os.environ.get('RAY_TMPDIR', '/tmp/ray')!r} "
                    "would be longer than the 107 bytes Unix allows; set RAY_TMPDIR to a "
                    "shorter folder (such as /tmp/ray)") from None
            finally:
                for notice, level in zip(notices, levels):
                    notice.setLevel(level)
            started = True
            _trim_local_instance()
    res = ray.cluster_resources()
    return ClusterInfo(res.get("CPU", 0.0), res.get("GPU", 0.0), started)


def probe(address: str, timeout: float = 5.0) -> None:
    """Fail fast on an address where nothing listens: Ray itself retries for minutes."""
    import socket

    from ..errors import SettingsError

    if address == "auto":
        return
    host, _, port = address.split("://")[-1].rpartition(":")
    if not host or not port.isdigit():
        raise SettingsError(f"--address {address!r} is not HOST:PORT or 'auto'")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise SettingsError(f"cannot reach the Ray cluster at {address!r} ({exc.strerror or exc}); "
                            "check --address (or RAY_ADDRESS) and that the cluster is up") from None


def _trim_local_instance() -> None:
    """Stop the daemons of a local instance that serve nothing it does: the autoscaler's
    monitor (no nodes to add), the log monitor (worker output is not sent to the driver)
    and the API server behind the dashboard (which is off). On 2 cores they held 176 MiB
    of the instance's 466 (PSS) and used CPU beside the tiles; the GCS, the raylet and its
    agents, which run the workers, stay."""
    import ray

    # Ray's private API: where it has moved, the daemons stay, as they did before.
    node = getattr(getattr(getattr(ray, "_private", None), "worker", None), "_global_node", None)
    for name in ("kill_monitor", "kill_log_monitor", "kill_dashboard"):
        kill = getattr(node, name, None)
        if kill is not None:
            with contextlib.suppress(Exception):
                kill(check_alive=False)


def disconnect(info: ClusterInfo) -> None:
    """Shut down a local instance this process started; leave clusters running."""
    import ray

    if info.started_here and ray.is_initialized():
        ray.shutdown()
