"""Dropout."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from funcnet.core import Array, Context, Key, Layer, MissingKeyError, Params, State, array_spec


def check_rate(value: Any, argument: str, kind: str) -> None:
    """Raises ``ValueError`` unless ``value`` (a drop probability) is a number in ``[0, 1)``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{kind}: `{argument}` is the probability of dropping and must be in [0, 1), got {value!r}.")


def Dropout(rate: float, name: str | None = None) -> Layer:
    """Zeroes each value with probability ``rate`` while training, scaling the rest by ``1/(1-rate)``.

    ``rate`` is the probability of *dropping* (as in Keras and PyTorch). In evaluation
    (``train=False``) the layer is the identity; in training it needs a ``key``.

    Args:
        rate: drop probability, in ``[0, 1)``.
        name: this layer's name in an enclosing model.

    Shapes:
        Any shape, unchanged. No params or state.
    """
    check_rate(rate, "rate", "Dropout")

    def init(key: Key, input_spec: Any, *, context: Context | None = None) -> tuple[Any, Params, State]:
        del key, context
        return array_spec(input_spec), {}, {}

    def apply(params: Params, state: State, x: Array, *, key: Key | None = None,
              train: bool = False, context: Context | None = None) -> tuple[Array, State]:
        del params, context
        if not train or rate == 0:
            return x, state
        if key is None:
            raise MissingKeyError(
                "train=True needs a random key to drop values, got key=None.",
                hint="pass key=jax.random.key(seed) to apply (fit and the train step do this for you).",
            )
        keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
        return jnp.where(keep, x / (1.0 - rate), jnp.zeros((), x.dtype)).astype(x.dtype), state

    return Layer(init, apply, "Dropout", {"rate": rate}, (), name)
