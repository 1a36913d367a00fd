"""The interface every contender implements."""

from __future__ import annotations

import numpy as np

from benchmarks.specs import Spec


class Runner:
    """A training loop for one network in one library.

    Subclasses implement :meth:`start` and :meth:`run`; ``self.batches`` is the number of
    distinct batches in the data (steps cycle through them).
    """

    def __init__(self, spec: Spec, x: np.ndarray, y: np.ndarray) -> None:
        if len(x) % spec.batch:
            raise ValueError(f"the data ({len(x)} examples) must be whole batches of {spec.batch}")
        self.spec = spec
        self.x, self.y = x, y
        self.batches = len(x) // spec.batch
        self.step_count = 0

    def batch(self, i: int) -> slice:
        """The examples of the ``i``-th step (cycling over the data)."""
        start = (i % self.batches) * self.spec.batch
        return slice(start, start + self.spec.batch)

    def start(self) -> None:
        """Builds the network and optimizer, runs the first step and waits for it."""
        raise NotImplementedError

    def run(self, steps: int) -> None:
        """Runs ``steps`` training steps and waits for the last one."""
        raise NotImplementedError

    def loss(self) -> float:
        """The loss of the last step (for a sanity check that training works)."""
        raise NotImplementedError
