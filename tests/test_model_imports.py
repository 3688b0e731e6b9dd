"""Listing and describing the registered models imports neither torch nor Ray, so that
`tilewave models` and planning a run start instantly. Each check runs in a fresh
interpreter, since this test session has long imported both."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# A fresh interpreter is the only one that has imported nothing yet.
pytestmark = pytest.mark.subprocess

HEAVY = ("torch", "ray", "spandrel")

DESCRIBE_ALL = """
import sys
import tilewave.models as models
from tilewave.models.ncnn_files import wheel_installed

for entry in models.available_models():
    name = models.get_entry(entry.name).name
    models.resolve_scale(name, None)
    if entry.folder:  # described by its folder (tests/test_sd_x4.py); listed generically
        entry.listing()
    else:
        models.describe_model(name, entry.default_scale)
    if entry.requires:
        wheel_installed(entry.requires)
models.canonical_name("SPAN_x2")
"""

CHECK = """
heavy = sorted(m for m in {heavy!r} if m in sys.modules)
assert not heavy, f"imported {{heavy}}"
"""


def _run(code: str) -> None:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_listing_and_describing_models_imports_no_torch_or_ray():
    _run(DESCRIBE_ALL + CHECK.format(heavy=HEAVY))


def test_the_models_package_alone_imports_no_torch_or_ray():
    """The same with ``tilewave/__init__`` left out: the models' own imports, whatever
    the top-level package imports."""
    import tilewave

    package_dir = list(tilewave.__path__)
    stub = (f"import sys, types\n"
            f"package = types.ModuleType('tilewave')\n"
            f"package.__path__ = {package_dir!r}\n"
            f"sys.modules['tilewave'] = package\n")
    _run(stub + DESCRIBE_ALL + CHECK.format(heavy=HEAVY))
