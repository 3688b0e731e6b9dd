"""The six directions in which contexts travel through the raster-order tile DAG.

A tile emits contexts to its right, lower and lower-right neighbours (outbound) and
receives them from its left, upper and upper-left ones (inbound). The values are the
names contexts have always been stored under, so persisted contexts of a job started by
an earlier version still resume.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum


class Direction(StrEnum):
    """Where a context goes (outbound) or where it came from (inbound)."""

    RIGHT = "right"
    BELOW = "below"
    BELOW_RIGHT = "below_right"
    LEFT = "left"
    TOP = "top"
    TOP_LEFT = "top_left"


#: Inbound directions and the offset (rows, cols) of their producer.
INBOUND: Mapping[Direction, tuple[int, int]] = {
    Direction.LEFT: (0, -1), Direction.TOP: (-1, 0), Direction.TOP_LEFT: (-1, -1)}
#: Outbound directions and the offset (rows, cols) of their consumer.
OUTBOUND: Mapping[Direction, tuple[int, int]] = {
    Direction.RIGHT: (0, 1), Direction.BELOW: (1, 0), Direction.BELOW_RIGHT: (1, 1)}
#: Which outbound context of the producer arrives under which inbound name.
ARRIVES_AS: Mapping[Direction, Direction] = {
    Direction.RIGHT: Direction.LEFT, Direction.BELOW: Direction.TOP,
    Direction.BELOW_RIGHT: Direction.TOP_LEFT}
