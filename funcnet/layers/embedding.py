"""Embedding: a lookup table from integer ids to learned vectors."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from funcnet.core import (
    Array,
    Context,
    Initializer,
    InputTypeError,
    Key,
    Layer,
    Params,
    ShapeError,
    State,
    array_spec,
    check_callable,
    check_positive,
    format_shape,
    get_params,
    spec,
)

normal = jax.nn.initializers.normal(stddev=0.05)


def Embedding(
    vocab_size: int,
    features: int,
    *,
    w_init: Initializer = normal,
    name: str | None = None,
) -> Layer:
    """Maps each integer id to row ``id`` of a learned table: ``y[..., :] = w[x[...]]``.

    Ids outside ``[0, vocab_size)``, negative ones included, give rows of NaN, eagerly and under
    ``jax.jit`` alike (JAX cannot raise on values inside a compiled function), so the mistake
    shows up as a NaN loss instead of a silently reused row; their gradient is zero.

    Args:
        vocab_size: number of ids (rows of the table).
        features: size of each vector.
        w_init: initializer from ``jax.nn.initializers`` (normal with standard deviation 0.05).
        name: this layer's name in an enclosing model.

    Shapes:
        ``(N, ...)`` integers ``-> (N, ..., features)`` in float32 (the table's dtype).

    Params:
        ``{"w": (vocab_size, features)}``.

    Raises:
        InputTypeError: at init and apply, for a non-integer input.
    """
    check_positive(vocab_size, "vocab_size", "Embedding")
    check_callable(w_init, "w_init", "Embedding")
    check_positive(features, "features", "Embedding")

    def check(shape: Any) -> None:
        if not isinstance(shape, tuple) or len(shape) < 1:
            raise ShapeError("Embedding expects integer ids of shape (batch, ...), got "
                             f"{format_shape(shape)}.")

    def init(key: Key, input_spec: Any, *, context: Context | None = None) -> tuple[Any, Params, State]:
        del context
        input_shape = array_spec(input_spec, dtype=jnp.integer, name="ids").shape
        check(input_shape)
        return spec((*input_shape, features)), {"w": w_init(key, (vocab_size, features), jnp.float32)}, {}

    def apply(params: Params, state: State, x: Array, *, key: Key | None = None,
              train: bool = False, context: Context | None = None) -> tuple[Array, State]:
        del key, train, context
        (w,) = get_params(params, ("w",))
        if not jnp.issubdtype(x.dtype, jnp.integer):
            raise InputTypeError(
                f"Embedding takes integer ids, got dtype {x.dtype}.",
                hint="pass token ids as integers, for example `x.astype('int32')` if they are "
                "whole-number floats.",
            )
        check(tuple(x.shape))
        # jnp.take wraps negative ids like NumPy; map them past the end so that "fill" gives NaN.
        ids = jnp.where(x < 0, w.shape[0], x)
        return jnp.take(w, ids, axis=0, mode="fill", fill_value=jnp.nan), state

    config = {"vocab_size": vocab_size, "features": features}
    return Layer(init, apply, "Embedding", config, (), name)
