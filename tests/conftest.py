"""Shared fixtures and hooks: one local Ray instance for the whole session, a test S3 server,
the model registry restored after each test. Helpers that are not fixtures are in
``helpers.py``."""

from __future__ import annotations

import os
import pathlib

import pytest
from helpers import S3_SECRET


def pytest_configure(config: pytest.Config) -> None:
    # A local instance for tests needs no token, and must keep its files on local disk.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    tmp = pathlib.Path(__file__).resolve().parents[1] / ".ray-tmp"
    tmp.mkdir(exist_ok=True)
    os.environ.setdefault("RAY_TMPDIR", str(tmp))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A test that takes the Ray fixture means to start Ray, whatever its marks say.
    for item in items:
        if "ray_local" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ray)


@pytest.fixture(autouse=True)
def _ray_only_where_marked(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """Make ``ray.init`` raise in tests not marked ``ray``: unit tests must not start Ray
    by accident (it costs ~10 s and hides what they test)."""
    if request.node.get_closest_marker("ray") is None:
        import ray

        def refuse(*_args, **_kwargs):
            raise RuntimeError(f"{request.node.nodeid} starts Ray but is not marked `ray`")

        monkeypatch.setattr(ray, "init", refuse)
    yield


@pytest.fixture(scope="session")
def ray_local():
    """A 2-CPU local Ray instance shared by every test that needs Ray (~10 s to start)."""
    import ray

    from tilewave.actors.cluster import connect

    connect(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def s3():
    """A moto S3 server on 127.0.0.1 and a bucket; the AWS_* variables point at it."""
    moto_server = pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "tilewave-test-key", "AWS_SECRET_ACCESS_KEY": S3_SECRET,
           "AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem()
    fs.mkdir("tw-bucket")
    yield fs
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(autouse=True)
def _restore_model_registry():
    """Undo every model a test registers, so that none leaks into later tests."""
    from tilewave.models import registry

    table = registry._REGISTRY
    saved = dict(table)
    yield
    # A test may also have swapped the dict itself (monkeypatch.setattr).
    table.clear()
    table.update(saved)
    registry._REGISTRY = table
