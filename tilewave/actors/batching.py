"""Batching a worker's concurrent tiles through its model as one call.

A worker runs several tiles at once on threads (:mod:`.worker`). With a batch size
above one, each thread hands its model input to a :class:`Batcher` and waits; a
dedicated thread stacks up to ``size`` inputs of one shape (the interior tiles of a grid
all have one shape) and runs them together, which is what keeps a GPU busy. Inputs of
another shape, or a batch that does not fill within ``wait_s``, run as they are.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future

import torch

#: How long the first input of a batch waits for others before running without them.
WAIT_S = 0.02


class Batcher:
    """Runs ``run`` on batches of up to ``size`` same-shape ``(1, c, h, w)`` inputs."""

    def __init__(self, run: Callable[[torch.Tensor], torch.Tensor], size: int, wait_s: float = WAIT_S):
        if size < 1:
            raise ValueError(f"a batch holds at least one tile, not {size}")
        self.run, self.size, self.wait_s = run, size, wait_s
        self._pending: list[tuple[torch.Tensor, Future[torch.Tensor]]] = []
        self._ready = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name="batcher", daemon=True)
        self._thread.start()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The model's output for ``x``, computed in a batch with other threads' inputs."""
        done: Future[torch.Tensor] = Future()
        with self._ready:
            self._pending.append((x, done))
            self._ready.notify()
        return done.result()

    def _take(self) -> list[tuple[torch.Tensor, Future[torch.Tensor]]]:
        with self._ready:
            while not self._pending:
                self._ready.wait()
            shape = self._pending[0][0].shape
            # Wait (briefly) for the batch to fill with inputs of the first one's shape.
            self._ready.wait_for(lambda: sum(x.shape == shape for x, _ in self._pending) >= self.size,
                                 timeout=self.wait_s)
            batch = [p for p in self._pending if p[0].shape == shape][: self.size]
            taken = {id(p) for p in batch}
            self._pending = [p for p in self._pending if id(p) not in taken]
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._take()
            try:
                out = self.run(torch.cat([x for x, _ in batch]))
            except BaseException as exc:  # each tile reports the failure as its own
                for _, done in batch:
                    done.set_exception(exc)
                continue
            for i, (_, done) in enumerate(batch):
                done.set_result(out[i : i + 1])
