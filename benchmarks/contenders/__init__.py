"""The contenders of the step benchmark: one training loop per library, for any :class:`Spec`.

Each is a :class:`Runner`: ``start()`` builds the network and optimizer and runs the first
training step (so its duration is the time to the first step: tracing and compilation included),
``run(steps)`` runs ``steps`` more steps over the benchmark's batches and waits for the result.
All train the same network (:mod:`benchmarks.specs`) with Adam 1e-3 and softmax cross-entropy on
the same batches; each is written the way its library's documentation writes a training step.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import numpy as np

from benchmarks.contenders.base import Runner
from benchmarks.specs import Spec

#: contender name -> (the packages it needs, the module that defines it, its class name)
CONTENDERS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "funcnet step": ((), "funcnet_runners", "FuncnetStep"),
    "funcnet step (no guard)": ((), "funcnet_runners", "FuncnetStepNoGuard"),
    "funcnet step (reference lowering)": ((), "funcnet_runners", "FuncnetStepReference"),
    "funcnet fit": ((), "funcnet_runners", "FuncnetFit"),
    "hand-written JAX": ((), "jax_peers", "HandJax"),
    "Flax linen": (("flax",), "jax_peers", "FlaxLinen"),
    "Flax NNX": (("flax",), "jax_peers", "FlaxNNX"),
    "Equinox": (("equinox",), "jax_peers", "Equinox"),
    "Haiku": (("haiku",), "jax_peers", "Haiku"),
    "PyTorch eager": (("torch",), "torch_peer", "TorchEager"),
    "PyTorch eager (1 thread)": (("torch",), "torch_peer", "TorchEagerOneThread"),
}


def missing_packages(name: str) -> list[str]:
    """The packages contender ``name`` needs that are not installed."""
    return [p for p in CONTENDERS[name][0] if importlib.util.find_spec(p) is None]


def make(name: str, spec: Spec, x: np.ndarray, y: np.ndarray) -> Runner:
    """Contender ``name`` for ``spec``, training on the batches of ``(x, y)`` in turn."""
    _, module_name, class_name = CONTENDERS[name]
    module = importlib.import_module(f"benchmarks.contenders.{module_name}")
    factory: Callable[..., Runner] = getattr(module, class_name)
    return factory(spec, x, y)


__all__ = ["CONTENDERS", "Runner", "make", "missing_packages"]
