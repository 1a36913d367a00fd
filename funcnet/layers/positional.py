"""Positions: a learned ``PositionalEmbedding``, a fixed ``SinusoidalEncoding``, and rotary embeddings.

Both layers add a vector per position to ``(N, T, C)``. Positions are ``0 .. T-1``; in decode mode
(``context={"decode": t}``, see the custom-layer guide) an input of ``L`` steps is at positions
``t .. t+L-1``. :func:`rotate` is the rotary embedding ``MultiHeadAttention(rotary=True)`` applies to
its queries and keys.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from funcnet.core import (
    Array,
    Context,
    Key,
    Layer,
    Params,
    ShapeError,
    State,
    array_spec,
    check_floating,
    check_input_shape,
    check_positive,
    check_rank,
    format_shape,
    get_params,
)

normal = jax.nn.initializers.normal(stddev=0.02)


def start_position(context: Context | None) -> Array:
    """The position of an input's first step, int32: 0, or ``t`` in decode mode (``context["decode"]``)."""
    return jnp.asarray(0 if context is None or "decode" not in context else context["decode"], jnp.int32)


def positions(context: Context | None, steps: int) -> Array:
    """The positions ``(steps,)`` int32 of an input's steps: ``0 ..``, or ``t ..`` in decode mode."""
    return start_position(context) + jnp.arange(steps, dtype=jnp.int32)


def decode_cache_size(context: Context | None) -> tuple[int, int] | None:
    """At init: ``(batch, max_length)`` of the decode cache (``context["decode"]``), or None outside decode mode."""
    if context is None or "decode" not in context:
        return None
    size = context["decode"]
    if not hasattr(size, "shape") or len(size.shape) != 2 or not all(isinstance(d, int) for d in size.shape):
        raise ShapeError(f"context['decode'] at init must be a (batch, max_length) ShapeDtypeStruct, got {size!r}.",
                         hint="init with context={'decode': jax.ShapeDtypeStruct((batch, max_length), jnp.int32)}.")
    return tuple(size.shape)


def _check_sequence(input_spec: Any) -> jax.ShapeDtypeStruct:
    x_spec = array_spec(input_spec, dtype=jnp.floating)
    check_rank(x_spec.shape, 3, "(batch, time, features)")
    return x_spec


def sinusoid(position: Array, features: int, base: float, dtype: Any = jnp.float32) -> Array:
    """The encodings ``(T, features)`` of ``position`` ``(T,)``: Vaswani et al.'s interleaved sines and cosines.

    ``e[p, 2i] = sin(p / base^(2i / C))`` and ``e[p, 2i + 1] = cos(p / base^(2i / C))`` for ``C = features``.
    """
    channel = jnp.arange(features)
    inverse_frequency = jnp.power(base, -(channel - channel % 2) / features).astype(dtype)
    angle = position.astype(dtype)[:, None] * inverse_frequency[None, :]
    return jnp.where(channel % 2 == 0, jnp.sin(angle), jnp.cos(angle))


def rotate(x: Array, position: Array, base: float) -> Array:
    """Rotary position embedding of ``x`` ``(N, T, heads, D)`` at ``position`` ``(T,)``, D even.

    The split-half convention of GPT-NeoX and LLaMA (Hugging Face's ``rotate_half``): channel ``i`` of
    the first half and channel ``i`` of the second half form a pair rotated by the angle
    ``position * base^(-2i / D)``: ``(x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin)``. Computed in at least
    float32, returned in ``x``'s dtype.
    """
    half = x.shape[-1] // 2
    compute = jnp.promote_types(x.dtype, jnp.float32)
    inverse_frequency = jnp.power(base, -jnp.arange(half, dtype=compute) * 2 / x.shape[-1])
    angle = position.astype(compute)[:, None] * inverse_frequency[None, :]  # (T, D/2)
    cos, sin = jnp.cos(angle)[None, :, None, :], jnp.sin(angle)[None, :, None, :]
    x1, x2 = x[..., :half].astype(compute), x[..., half:].astype(compute)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def PositionalEmbedding(max_length: int, *, name: str | None = None) -> Layer:
    """Adds a learned vector per position: ``y[:, t] = x[:, t] + embeddings[t]``.

    Args:
        max_length: the number of positions the table holds; longer inputs (or, in decode mode, a
            longer cache) are a ``ShapeError`` at init.
        name: this layer's name in an enclosing model.

    Shapes:
        ``(N, T, C) -> (N, T, C)``, ``T <= max_length``.

    Params:
        ``{"embeddings": (max_length, C)}``, normal with standard deviation 0.02.

    Decode mode:
        An input of ``L`` steps at ``context={"decode": t}`` adds rows ``t .. t+L-1`` (``t + L <= max_length``:
        a traced ``t`` cannot be checked, and ``jax.lax.dynamic_slice`` would clamp it).
    """
    check_positive(max_length, "max_length", "PositionalEmbedding")

    def init(key: Key, input_spec: Any, *, context: Context | None = None) -> tuple[Any, Params, State]:
        x_spec = _check_sequence(input_spec)
        cache_size = decode_cache_size(context)
        steps, cache = x_spec.shape[1], None if cache_size is None else cache_size[1]
        for length, what in ((steps, f"an input of shape {format_shape(x_spec.shape)}"),
                             (cache, f"a decode cache of length {cache}")):
            if length is not None and length > max_length:
                raise ShapeError(f"PositionalEmbedding(max_length={max_length}) cannot embed {what}: it has "
                                 f"{length} positions, more than max_length.",
                                 hint=f"build it with max_length >= {length}, or feed shorter sequences.")
        return x_spec, {"embeddings": normal(key, (max_length, x_spec.shape[-1]), jnp.float32)}, {}

    def apply(params: Params, state: State, x: Array, *, key: Key | None = None,
              train: bool = False, context: Context | None = None) -> tuple[Array, State]:
        del key, train
        (table,) = get_params(params, ("embeddings",))
        check_floating(x)
        check_rank(tuple(x.shape), 3, "(batch, time, features)")
        check_input_shape(x, (None, None, table.shape[-1]), f"embeddings has shape {tuple(table.shape)}")
        if x.shape[1] > table.shape[0]:
            raise ShapeError(f"PositionalEmbedding has {table.shape[0]} positions, got an input of "
                             f"{x.shape[1]} steps {format_shape(tuple(x.shape))}.")
        rows = jax.lax.dynamic_slice_in_dim(table, start_position(context), x.shape[1], axis=0)
        return x + rows.astype(x.dtype)[None], state

    return Layer(init, apply, "PositionalEmbedding", {"max_length": max_length}, (), name)


def SinusoidalEncoding(*, base: float = 10000.0, name: str | None = None) -> Layer:
    """Adds fixed sinusoids per position (Vaswani et al. 2017): ``y[:, t] = x[:, t] + e[t]``.

    ``e[t, 2i] = sin(t / base^(2i / C))`` and ``e[t, 2i + 1] = cos(t / base^(2i / C))``, computed in
    float32 and added in the input's dtype.

    Args:
        base: the wavelength scale, > 0.
        name: this layer's name in an enclosing model.

    Shapes:
        ``(N, T, C) -> (N, T, C)``. No params or state.

    Decode mode:
        An input of ``L`` steps at ``context={"decode": t}`` gets the encodings of ``t .. t+L-1``.
    """
    if isinstance(base, bool) or not isinstance(base, (int, float)) or not base > 0:
        raise ValueError(f"SinusoidalEncoding: `base` must be a positive number, got {base!r}.")

    def init(key: Key, input_spec: Any, *, context: Context | None = None) -> tuple[Any, Params, State]:
        del key, context
        return _check_sequence(input_spec), {}, {}

    def apply(params: Params, state: State, x: Array, *, key: Key | None = None,
              train: bool = False, context: Context | None = None) -> tuple[Array, State]:
        del params, key, train
        check_floating(x)
        check_rank(tuple(x.shape), 3, "(batch, time, features)")
        encoding = sinusoid(positions(context, x.shape[1]), x.shape[-1], base, jnp.promote_types(x.dtype, jnp.float32))
        return x + encoding.astype(x.dtype)[None], state

    return Layer(init, apply, "SinusoidalEncoding", {"base": base}, (), name)
