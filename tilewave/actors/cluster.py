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
    """Join the Ray cluster at ``address`` (``auto`` finds a running one) or start a
    local instance; reuses an instance this process already joined."""
    import ray

    from ..errors import SettingsError

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
                                    "check --address") from None
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
                            "check --address and that the cluster is up") from None


def disconnect(info: ClusterInfo) -> None:
    """Shut down a local instance this process started; leave clusters running."""
    import ray

    if info.started_here and ray.is_initialized():
        # Ray stops its daemons one after another, each given a second to exit after
        # SIGTERM. Its autoscaler monitor, of no use to an instance that lives and dies
        # with this process, spends that whole second trying to report its own end to
        # the GCS stopped just before it: killed first, it adds nothing to every job's
        # end (1.4 s -> 0.4 s on 2 cores).
        node = getattr(getattr(ray, "_private", None), "worker", None)
        kill_monitor = getattr(getattr(node, "_global_node", None), "kill_monitor", None)
        if kill_monitor is not None:
            with contextlib.suppress(Exception):
                kill_monitor(check_alive=False)
        ray.shutdown()
