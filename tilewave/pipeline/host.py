"""What this machine offers a job run here, read without importing torch or Ray (the
choice of executor is made before either is needed)."""

from __future__ import annotations

import glob
import os


def usable_cpus() -> int:
    """The CPUs this process may use: its affinity, within a container's CPU quota
    (cgroup v2 ``cpu.max``), rather than the host's count ``os.cpu_count`` gives."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cpus = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def has_nvidia_gpu() -> bool:
    """Whether an NVIDIA GPU device is visible (``/dev/nvidia0``, ...), unless
    ``CUDA_VISIBLE_DEVICES`` hides every one."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return bool(glob.glob("/dev/nvidia[0-9]*"))
