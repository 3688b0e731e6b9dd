"""Shared fixtures: one local Ray instance for the whole session, and sample images."""

from __future__ import annotations

import os
import pathlib

import numpy as np
import pytest

#: ../shared/data beside the checkout, present on development machines and in CI.
SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


def pytest_configure(config: pytest.Config) -> None:
    # A local instance for tests needs no token, and must keep its files on local disk.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    tmp = pathlib.Path(__file__).resolve().parents[1] / ".ray-tmp"
    tmp.mkdir(exist_ok=True)
    os.environ.setdefault("RAY_TMPDIR", str(tmp))


@pytest.fixture(scope="session")
def ray_local():
    """A 2-CPU local Ray instance shared by every test that needs Ray (~10 s to start)."""
    import ray

    from tilewave.actors.cluster import connect

    connect(num_cpus=2)
    yield ray
    ray.shutdown()


def shared_file(name: str) -> pathlib.Path:
    """A file from ../shared/data, or skip when this checkout has none beside it."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} is not present beside this checkout")
    return path


def random_image(shape: tuple[int, int, int], dtype: str, seed: int = 0) -> np.ndarray:
    """A ``(c, h, w)`` image of random values covering the dtype's range."""
    rng = np.random.default_rng(seed)
    if dtype == "float32":
        return rng.random(shape, dtype=np.float32)
    info = np.iinfo(dtype)
    return rng.integers(0, int(info.max) + 1, shape).astype(dtype)


def zarr_input(path, pixels: np.ndarray, chunk: int = 64) -> str:
    """Write ``(c, h, w)`` pixels as a Zarr v3 array with named axes; returns its path."""
    import zarr

    arr = zarr.create_array(str(path), shape=pixels.shape, chunks=(pixels.shape[0], chunk, chunk),
                            dtype=pixels.dtype, dimension_names=("c", "y", "x"))
    arr[:] = pixels
    return str(path)
