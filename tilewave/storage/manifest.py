"""The job record, ``.tilewave/job.json`` while a job runs and the output group's
``tilewave`` attribute once it is complete.

:class:`Manifest` owns every field of that record; nothing else reads or writes it. The
JSON layout is unchanged from earlier versions, so their jobs still resume.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from . import location
from .layout import manifest_path, state_dir


@dataclass(kw_only=True)
class Manifest:
    """What a job is (input, settings, grid) and how far it got."""

    tilewave: str
    #: The input's fingerprint (path, size, shape, modification time): resume refuses
    #: to continue from a changed input.
    input: dict[str, Any]
    settings: dict[str, Any]
    grid: list[int]
    #: The output group and its arrays exist.
    created: bool = False
    #: The input was copied into the job's working store.
    ingested: bool = False
    #: Pyramid levels already built (array paths), so a resumed job builds only the rest.
    pyramid: list[str] = field(default_factory=list)
    complete: bool = False
    #: The input's inherited image metadata (pixel size, channels, GeoKeys), kept beside
    #: the job record in the finished output.
    metadata: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Manifest | None:
        """The manifest a JSON record holds, or None if it is not a whole, well-typed one
        (a record damaged by hand or by another program cannot be resumed from)."""
        known = {f.name for f in dataclasses.fields(cls)}
        try:
            manifest = cls(**{k: v for k, v in record.items() if k in known})
        except TypeError:  # a required field missing
            return None
        typed = (isinstance(manifest.tilewave, str) and isinstance(manifest.input, dict)
                 and isinstance(manifest.settings, dict) and isinstance(manifest.grid, list)
                 and isinstance(manifest.pyramid, list))
        return manifest if typed else None

    def as_dict(self) -> dict[str, Any]:
        record = dataclasses.asdict(self)
        if self.complete:  # a finished output keeps only what describes the result
            for key in ("created", "ingested", "pyramid"):
                record.pop(key)
        if record["metadata"] is None:
            record.pop("metadata")
        if not record["complete"]:
            record.pop("complete")
        return record

    def first_difference(self, other: Manifest) -> str:
        """The first setting that differs from ``other``'s, as ``key: was X, now Y``."""
        old, new = self.settings, other.settings
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                return f"{key}: was {old.get(key)!r}, now {new.get(key)!r}"
        return "unknown"

    def save(self, output: str) -> None:
        """Write the running job's record (durably: a resumed job trusts it)."""
        data = json.dumps(self.as_dict(), indent=1, sort_keys=True).encode()
        location.write_bytes(manifest_path(output), data, durable=True)

    @classmethod
    def read(cls, output: str) -> Manifest | None:
        """The running job's record, or a complete job's from the group attributes."""
        path = manifest_path(output)
        try:
            if location.exists(path):
                record = json.loads(location.read_bytes(path))
                return cls.from_dict(record) if isinstance(record, dict) else None
            group = json.loads(location.read_bytes(location.join(output, "zarr.json")))
        except (OSError, ValueError):
            return None
        attributes = group.get("attributes") if isinstance(group, dict) else None
        job = attributes.get("tilewave") if isinstance(attributes, dict) else None
        return cls.from_dict(job) if isinstance(job, dict) and job.get("complete") else None

    def finish(self, output: str) -> None:
        """Record the job as complete in the output group and remove its working state."""
        import zarr

        self.complete = True
        group = zarr.open_group(output, mode="r+")
        previous = group.attrs.get("tilewave", {})
        if isinstance(previous, dict) and "metadata" in previous:
            self.metadata = previous["metadata"]
        group.attrs["tilewave"] = self.as_dict()
        location.remove_tree(state_dir(output))
