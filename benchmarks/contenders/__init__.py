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

#: The sequence benchmark's contenders, as above, for the LSTM classifier.
LSTM_CONTENDERS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "funcnet step": ((), "seq_funcnet", "LSTMStep"),
    "funcnet step (no guard)": ((), "seq_funcnet", "LSTMStepNoGuard"),
    "funcnet fit": ((), "seq_funcnet", "LSTMFit"),
    "hand-written JAX": ((), "seq_jax", "HandLSTM"),
    "hand-written JAX (projection in the loop)": ((), "seq_jax", "HandLSTMInLoop"),
    "hand-written JAX (custom VJP)": ((), "seq_jax", "HandLSTMCustomVJP"),
    "Flax linen": (("flax",), "seq_jax", "FlaxLinenLSTM"),
    "PyTorch eager": (("torch",), "seq_torch", "TorchLSTM"),
    "PyTorch eager (1 thread)": (("torch",), "seq_torch", "TorchLSTMOneThread"),
}

#: ... and for the transformer encoder (funcnet's need its TransformerEncoderBlock).
ENCODER_CONTENDERS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "funcnet step": (("funcnet:TransformerEncoderBlock",), "seq_funcnet", "EncoderStep"),
    "funcnet step (no guard)": (("funcnet:TransformerEncoderBlock",), "seq_funcnet", "EncoderStepNoGuard"),
    "funcnet fit": (("funcnet:TransformerEncoderBlock",), "seq_funcnet", "EncoderFit"),
    "hand-written JAX": ((), "seq_jax", "HandEncoder"),
    "PyTorch eager": (("torch",), "seq_torch", "TorchEncoder"),
    "PyTorch eager (1 thread)": (("torch",), "seq_torch", "TorchEncoderOneThread"),
}

#: The contenders of each family of network (a spec's ``family``; the image networks have none).
FAMILIES = {"image": CONTENDERS, "lstm": LSTM_CONTENDERS, "encoder": ENCODER_CONTENDERS}


def registry(spec: object) -> dict[str, tuple[tuple[str, ...], str, str]]:
    """The contenders that train ``spec``'s family of network."""
    return FAMILIES[getattr(spec, "family", "image")]


def _missing(requirement: str) -> bool:
    """Whether a package (or, for ``"funcnet:NAME"``, a funcnet attribute) is absent."""
    if requirement.startswith("funcnet:"):
        import funcnet

        return not hasattr(funcnet, requirement.partition(":")[2])
    return importlib.util.find_spec(requirement) is None


def missing_packages(name: str, spec: object = None) -> list[str]:
    """The packages contender ``name`` (of ``spec``'s family; default the image networks') needs
    that are not installed."""
    return [p for p in registry(spec)[name][0] if _missing(p)]


def make(name: str, spec: Spec, x: np.ndarray, y: np.ndarray) -> Runner:
    """Contender ``name`` for ``spec``, training on the batches of ``(x, y)`` in turn."""
    _, module_name, class_name = registry(spec)[name]
    module = importlib.import_module(f"benchmarks.contenders.{module_name}")
    factory: Callable[..., Runner] = getattr(module, class_name)
    return factory(spec, x, y)


__all__ = ["CONTENDERS", "ENCODER_CONTENDERS", "LSTM_CONTENDERS", "Runner", "make", "missing_packages", "registry"]
