"""Object stores and other URLs (``s3://bucket/key``), through fsspec (s3fs for ``s3://``).

Credentials come from the usual places (environment, profile, instance role) and are
never part of a path, so no message here can carry them. fsspec and s3fs are imported
on first use: a job on local paths never loads them.
"""

from __future__ import annotations

import posixpath
from typing import IO, Any

from ...errors import SettingsError
from ...install import pip_hint
from .base import PreconditionFailed


def filesystem(path: str) -> tuple[Any, str]:
    """The fsspec filesystem of ``path`` and the path within it."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(path)
    except ImportError as exc:
        protocol = path.split("://", 1)[0]
        raise SettingsError(f"{protocol}:// paths need an extra package ({exc}); for s3:// "
                            f"install it with: {pip_hint('s3')}") from None


def _bucket_key(path: str) -> tuple[Any, str, str]:
    """The S3 client's filesystem, bucket and key of ``path``: conditional writes are
    S3's (``If-None-Match``, ``If-Match``), which fsspec's own interface does not offer."""
    fs, key = filesystem(path)
    if not hasattr(fs, "call_s3"):
        protocol = path.split("://", 1)[0]
        raise SettingsError(f"outputs at {protocol}:// cannot be locked (the job's lease needs "
                            "S3's conditional writes); write to s3:// or a local path")
    bucket, _, key = key.partition("/")
    return fs, bucket, key


def _precondition_failed(exc: BaseException) -> bool:
    """s3fs turns S3's 412 into FileExistsError for If-None-Match, OSError for If-Match."""
    return isinstance(exc, FileExistsError) or "pre-condition" in str(exc).lower() or (
        "PreconditionFailed" in str(exc))


def _refused(path: str) -> PreconditionFailed:
    return PreconditionFailed(f"{path}: the pre-condition of the write did not hold "
                              "(another version of the object is there)")


class FsspecBackend:
    """The :class:`~tilewave.storage.backends.base.Backend` of URLs."""

    local = False
    # A put that returned is stored: there is nothing to flush.
    durable_writes = True
    # Objects are replaced whole, never extended.
    appendable = False
    supports_flock = False

    def exists(self, path: str) -> bool:
        fs, key = filesystem(path)
        return bool(fs.exists(key))

    def isdir(self, path: str) -> bool:
        fs, key = filesystem(path)
        return bool(fs.isdir(key))

    def remove_tree(self, path: str) -> None:
        fs, key = filesystem(path)
        if fs.exists(key):
            fs.rm(key, recursive=True)

    def remove_file(self, path: str) -> None:
        fs, key = filesystem(path)
        if fs.exists(key):
            fs.rm(key)

    def read_bytes(self, path: str, length: int | None = None) -> bytes:
        fs, key = filesystem(path)
        return bytes(fs.cat_file(key, start=0, end=length) if length is not None
                     else fs.cat_file(key))

    def write_bytes(self, path: str, data: bytes, durable: bool = False) -> None:
        fs, key = filesystem(path)
        fs.pipe_file(key, data)  # one put: whole or not at all

    def append_bytes(self, path: str, data: bytes, durable: bool = False) -> None:
        raise NotImplementedError(f"objects cannot be appended to ({path}); write them whole")

    def listdir(self, path: str) -> list[str]:
        fs, key = filesystem(path)
        if not fs.exists(key):
            return []
        return [posixpath.basename(p.rstrip("/")) for p in fs.ls(key, detail=False)]

    def stat(self, path: str) -> tuple[int | None, int]:
        fs, key = filesystem(path)
        info = fs.info(key)
        modified = info.get("LastModified") or info.get("mtime") or 0
        stamp = int(modified.timestamp() * 1e9) if hasattr(modified, "timestamp") else int(modified)
        return (info.get("size") if info.get("type") == "file" else None), stamp

    def open_file(self, path: str, mode: str = "rb") -> IO[Any]:
        fs, key = filesystem(path)
        return fs.open(key, mode)

    def join(self, base: str, *parts: str) -> str:
        return posixpath.join(base, *parts)

    def absolute(self, path: str) -> str:
        return path.rstrip("/")

    # conditional operations -----------------------------------------------------------

    def read_tagged(self, path: str) -> tuple[bytes, str] | None:
        fs, bucket, key = _bucket_key(path)
        try:
            reply = fs.call_s3("get_object", Bucket=bucket, Key=key)
        except FileNotFoundError:
            return None
        from fsspec.asyn import sync

        # s3fs's client is aiobotocore's: the body streams on s3fs's event loop.
        body = reply["Body"]

        async def whole() -> bytes:
            async with body as stream:
                return bytes(await stream.read())

        return sync(fs.loop, whole), str(reply["ETag"])

    def _put(self, path: str, data: bytes, **condition: str) -> str:
        fs, bucket, key = _bucket_key(path)
        try:
            reply = fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, **condition)
        except Exception as exc:
            if _precondition_failed(exc):
                raise _refused(path) from None
            raise
        return str(reply["ETag"])

    def put_new(self, path: str, data: bytes) -> str:
        return self._put(path, data, IfNoneMatch="*")

    def put_replacing(self, path: str, data: bytes, tag: str) -> str:
        return self._put(path, data, IfMatch=tag)

    def remove_tagged(self, path: str, tag: str) -> None:
        fs, bucket, key = _bucket_key(path)
        try:
            fs.call_s3("delete_object", Bucket=bucket, Key=key, IfMatch=tag)
        except Exception as exc:
            if not _precondition_failed(exc) and not isinstance(exc, FileNotFoundError):
                raise


#: The one instance: fsspec keeps the filesystems (and their connections) per protocol.
URLS = FsspecBackend()
