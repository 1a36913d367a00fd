"""Activation functions (re-exported from ``jax.nn``) and the layers that apply them.

Each layer is elementwise (Softmax and LogSoftmax: along an axis), has no params or state and
keeps the input's shape and dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from funcnet.core import Array, Context, Key, Layer, Params, State, array_spec, check_floating

relu = jax.nn.relu
leaky_relu = jax.nn.leaky_relu
elu = jax.nn.elu
gelu = jax.nn.gelu
silu = jax.nn.silu
sigmoid = jax.nn.sigmoid
tanh = jax.nn.tanh
softmax = jax.nn.softmax
log_softmax = jax.nn.log_softmax

#: The names that ``activation=`` arguments accept.
ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "relu": relu,
    "leaky_relu": leaky_relu,
    "elu": elu,
    "gelu": gelu,
    "silu": silu,
    "sigmoid": sigmoid,
    "tanh": tanh,
    "softmax": softmax,
    "log_softmax": log_softmax,
    "linear": lambda x: x,
}


def resolve_activation(activation: str | Callable | None, owner: str) -> tuple[Callable, str | Callable | None]:
    """Returns ``(function, config value)`` for an ``activation=`` argument.

    The config value is the activation's name when it is one of :data:`ACTIVATIONS` (given by
    name or as the function itself), so a description of the model can rebuild it; a user's own
    function is kept as is, which a description records as not rebuildable.
    """
    if activation is None:
        return ACTIVATIONS["linear"], None
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise ValueError(f"{owner}: unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}.")
        return ACTIVATIONS[activation], activation
    if callable(activation):
        names = [name for name, fn in ACTIVATIONS.items() if fn is activation]
        return activation, names[0] if names else activation
    raise ValueError(f"{owner}: `activation` must be a name, a function or None, got {activation!r}.")


def _elementwise(kind: str, fn: Callable[[Array], Array], config: dict, name: str | None) -> Layer:
    def init(key: Key, input_spec: Any, *, context: Context | None = None) -> tuple[Any, Params, State]:
        del key, context
        return array_spec(input_spec, dtype=jnp.floating), {}, {}

    def apply(params: Params, state: State, x: Array, *, key: Key | None = None,
              train: bool = False, context: Context | None = None) -> tuple[Array, State]:
        del params, key, train, context
        check_floating(x)
        return fn(x), state

    return Layer(init, apply, kind, config, (), name)


def Relu(name: str | None = None) -> Layer:
    """``max(x, 0)``."""
    return _elementwise("Relu", relu, {}, name)


def LeakyRelu(negative_slope: float = 0.01, name: str | None = None) -> Layer:
    """``x`` where positive, ``negative_slope * x`` elsewhere."""
    return _elementwise("LeakyRelu", lambda x: leaky_relu(x, negative_slope),
                        {"negative_slope": negative_slope}, name)


def Elu(alpha: float = 1.0, name: str | None = None) -> Layer:
    """``x`` where positive, ``alpha * (exp(x) - 1)`` elsewhere."""
    return _elementwise("Elu", lambda x: elu(x, alpha), {"alpha": alpha}, name)


def Gelu(approximate: bool = True, name: str | None = None) -> Layer:
    """Gaussian error linear unit; ``approximate=False`` uses the exact erf form."""
    return _elementwise("Gelu", lambda x: gelu(x, approximate=approximate), {"approximate": approximate}, name)


def Silu(name: str | None = None) -> Layer:
    """``x * sigmoid(x)`` (also called swish)."""
    return _elementwise("Silu", silu, {}, name)


def Sigmoid(name: str | None = None) -> Layer:
    """``1 / (1 + exp(-x))``."""
    return _elementwise("Sigmoid", sigmoid, {}, name)


def Tanh(name: str | None = None) -> Layer:
    """Hyperbolic tangent."""
    return _elementwise("Tanh", tanh, {}, name)


def Softmax(axis: int = -1, name: str | None = None) -> Layer:
    """Softmax along ``axis`` (default: the last). Prefer logits plus a cross-entropy from logits."""
    return _elementwise("Softmax", lambda x: softmax(x, axis=axis), {"axis": axis}, name)


def LogSoftmax(axis: int = -1, name: str | None = None) -> Layer:
    """Log-softmax along ``axis`` (default: the last)."""
    return _elementwise("LogSoftmax", lambda x: log_softmax(x, axis=axis), {"axis": axis}, name)
