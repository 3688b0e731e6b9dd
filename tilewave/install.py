"""How to install an extra, said the way this installation was made: ``pip install
'tilewave[s3]'`` from the package index, ``pip install -e '.[s3]'`` in a checkout."""

from __future__ import annotations

import functools
import os


@functools.cache
def _checkout() -> str | None:
    """The checkout this tilewave is imported from (an editable install), or None."""
    package = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(package)
    if os.path.basename(root) in ("site-packages", "dist-packages"):
        return None
    return root if os.path.isfile(os.path.join(root, "pyproject.toml")) else None


def pip_hint(extra: str) -> str:
    """The command that installs ``extra`` into this environment."""
    checkout = _checkout()
    if checkout is None:
        return f"pip install 'tilewave[{extra}]'"
    where = "." if os.path.realpath(checkout) == os.path.realpath(os.getcwd()) else checkout
    return f"pip install -e '{where}[{extra}]'"
