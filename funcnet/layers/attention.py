"""MultiHeadAttention: self- and cross-attention with masks, a bias, grouped key/value heads, rotary
embeddings and a key/value cache for decoding.

The arithmetic is in :mod:`funcnet.layers._attention_ops`; this module builds the layer: its inputs,
params, side inputs and decode mode.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from funcnet.core import (
    Array,
    Context,
    Key,
    Layer,
    LayerError,
    MissingKeyError,
    Params,
    ParamsError,
    ShapeError,
    State,
    array_spec,
    as_compute,
    as_spec,
    check_dtype,
    check_floating,
    check_input_shape,
    check_positive,
    check_rank,
    format_shape,
    format_spec,
    get_params,
    side_input,
    spec,
)
from funcnet.layers._attention_ops import attend, combined_mask
from funcnet.layers.dropout import check_rate
from funcnet.layers.positional import decode_cache_size, rotate, start_position

_KIND = "MultiHeadAttention"
_PROJECTIONS = ("query", "key", "value", "output")
_STRUCTURE_HINT = ("give one array (N, T, C) for self-attention, or a dict {'query': (N, T, Cq), 'key': (N, S, Ck)} "
                   "with an optional 'value': (N, S, Cv) for cross-attention.")


def _check_config(num_heads: Any, key_size: Any, value_size: Any, out_features: Any, num_kv_heads: Any,
                  dropout: Any, flags: dict[str, Any], rotary_base: Any, side_inputs: dict[str, Any]) -> None:
    check_positive(num_heads, "num_heads", _KIND)
    check_positive(key_size, "key_size", _KIND)
    for argument, value in (("value_size", value_size), ("out_features", out_features),
                            ("num_kv_heads", num_kv_heads)):
        if value is not None:
            check_positive(value, argument, _KIND)
    if num_kv_heads is not None and num_heads % num_kv_heads:
        raise ValueError(f"{_KIND}: `num_heads` ({num_heads}) must be a multiple of `num_kv_heads` ({num_kv_heads}): "
                         "each key/value head serves num_heads // num_kv_heads query heads.")
    check_rate(dropout, "dropout", _KIND)
    for argument, value in flags.items():
        if not isinstance(value, bool):
            raise TypeError(f"{_KIND}: `{argument}` must be True or False, got {value!r}.")
    if flags["rotary"] and key_size % 2:
        raise ValueError(f"{_KIND}: rotary=True rotates pairs of channels, so `key_size` must be even, got {key_size}.")
    if isinstance(rotary_base, bool) or not isinstance(rotary_base, (int, float)) or not rotary_base > 0:
        raise ValueError(f"{_KIND}: `rotary_base` must be a positive number, got {rotary_base!r}.")
    for argument, value in side_inputs.items():
        if value is not None and (not isinstance(value, str) or not value):
            raise TypeError(f"{_KIND}: `{argument}` names a side input and must be a non-empty string or None, "
                            f"got {value!r}.")


def _split_inputs(x: Any, memory: Any) -> tuple[Any, Any, Any, bool]:
    """``(query, key, value, is_self_attention)`` of an input and the memory side input (None if not
    named); specs at init, arrays at apply."""
    if memory is not None:
        if not hasattr(x, "shape"):
            raise ShapeError(f"{_KIND} with a memory side input takes the queries as one array (N, T, C), got "
                             f"{format_spec(x)}.", hint="the keys and values come from the memory.")
        return x, memory, memory, False
    if isinstance(x, Mapping):
        unknown = sorted(set(x) - {"query", "key", "value"})
        if unknown or "query" not in x or "key" not in x:
            raise ShapeError(f"{_KIND} takes a dict with keys 'query', 'key' and optionally 'value', got keys "
                             f"{sorted(x)}.", hint=_STRUCTURE_HINT)
        return x["query"], x["key"], x.get("value", x["key"]), False
    if isinstance(x, (tuple, list)) or not hasattr(x, "shape"):
        raise ShapeError(f"{_KIND} takes one array or a dict of 'query', 'key' (and 'value'), got "
                         f"{format_spec(x)}.", hint=_STRUCTURE_HINT)
    return x, x, x, True


def _labels(self_attention: bool, memory: str | None) -> dict[str, str]:
    """How messages name the query, key and value inputs."""
    if self_attention:
        return {"query": "x", "key": "x", "value": "x"}
    if memory is not None:
        return {"query": "x", "key": f"the side input {memory!r}", "value": f"the side input {memory!r}"}
    return {"query": "x['query']", "key": "x['key']", "value": "x['value']"}


def _check_sequence(shape: tuple, name: str) -> None:
    check_rank(shape, 3, f"(batch, time, features) as {name}")


def _check_mask(mask: Any, name: str, steps: int | None, key_steps: int | None, batch: int | None) -> None:
    """A padding mask side input: bool ``(N, S)`` or ``(N, T, S)`` (a spec at init, an array at apply)."""
    check_dtype(mask, jnp.bool_, f"the side input {name!r} ({_KIND}'s mask)")
    shape = tuple(mask.shape)
    if shape[1:] not in ((key_steps,), (steps, key_steps)) or batch is not None and shape[0] not in (1, batch):
        raise ShapeError(f"{_KIND}: the side input {name!r} (its mask) must have shape (N, {key_steps}) for the keys "
                         f"or (N, {steps}, {key_steps}) for each query and key, got {format_shape(shape)}.",
                         hint="True marks the keys a query may attend to.")


def _check_bias(bias: Any, name: str, heads: int, steps: int | None, key_steps: int | None) -> None:
    """A bias side input: float, 4-D, broadcastable to ``(N, heads, T, S)``."""
    check_dtype(bias, jnp.floating, f"the side input {name!r} ({_KIND}'s bias)")
    shape = tuple(bias.shape)
    if len(shape) != 4 or any(d not in (1, want) for d, want in zip(shape[1:], (heads, steps, key_steps))):
        raise ShapeError(f"{_KIND}: the side input {name!r} (its bias) must have 4 axes broadcastable to "
                         f"(N, {heads}, {steps}, {key_steps}), each of them that size or 1, got {format_shape(shape)}.")


def MultiHeadAttention(num_heads: int, key_size: int, *, value_size: int | None = None,
                       out_features: int | None = None, num_kv_heads: int | None = None, dropout: float = 0.0,
                       causal: bool = False, use_bias: bool = True, rotary: bool = False,
                       rotary_base: float = 10000.0, mask: str | None = None, bias: str | None = None,
                       memory: str | None = None, name: str | None = None) -> Layer:
    """Multi-head scaled dot-product attention, ``softmax(q k^T / sqrt(key_size) + bias) v`` per head.

    Queries, keys and values are linear projections of the inputs into ``num_heads`` (queries) and
    ``num_kv_heads`` (keys and values) heads; the heads' outputs are projected back to ``out_features``.
    With ``num_kv_heads < num_heads`` (grouped-query attention; 1 is multi-query attention) query head
    ``h`` reads key/value head ``h // (num_heads // num_kv_heads)``. The attention itself is
    ``jax.nn.dot_product_attention``, except with dropout in training, ``value_size != key_size`` or
    float64 inputs, where the same equations are written out (softmax in at least float32).

    Args:
        num_heads: number of query heads ``H``.
        key_size: size of each query and key head.
        value_size: size of each value head (``key_size``).
        out_features: size of the output (the query's features).
        num_kv_heads: number of key/value heads ``K`` (``num_heads``); ``num_heads % K == 0``.
        dropout: probability of dropping each attention weight while training (needs a key).
        causal: a query at position ``i`` attends only to keys at positions ``<= i``.
        use_bias: whether the four projections have biases.
        rotary: apply rotary position embeddings to queries and keys (split-half convention of
            GPT-NeoX and LLaMA, see :func:`funcnet.layers.positional.rotate`); ``key_size`` even.
            Queries are at positions ``0 .. T-1`` and keys at ``0 .. S-1`` (``t ..`` in decode mode).
        rotary_base: the rotary wavelength scale.
        mask: the name of a bool side input: a key padding mask ``(N, S)`` or a mask ``(N, T, S)``,
            True where a query may attend. Combined with ``causal`` by logical and.
        bias: the name of a float side input added to the logits, 4-D and broadcastable to
            ``(N, num_heads, T, S)``. Use ``mask`` to mask: an all ``-inf`` row of bias gives NaN.
        memory: the name of a side input ``(N, S, Cm)`` to attend to (an encoder's output): then the
            input is the queries alone and the memory gives the keys and values, so cross-attention
            layers stack in ``serial`` (see :func:`funcnet.with_context`).
        name: this layer's name in an enclosing model.

    Shapes:
        Self-attention: ``(N, T, C) -> (N, T, out_features)``. Cross-attention: a dict
        ``{"query": (N, T, Cq), "key": (N, S, Ck), "value": (N, S, Cv)}`` (value defaults to key)
        ``-> (N, T, out_features)``; with ``memory``, ``(N, T, Cq) -> (N, T, out_features)``.

    Params:
        ``{"query": {"w": (Cq, H, key_size), "b": (H, key_size)}, "key": {"w": (Ck, K, key_size), "b": (K, key_size)},
        "value": {"w": (Cv, K, value_size), "b": (K, value_size)}, "output": {"w": (H, value_size, out_features),
        "b": (out_features,)}}`` (no ``"b"`` with ``use_bias=False``); weights Glorot uniform, biases zero.

    Masked rows:
        A query whose keys are all masked (by ``mask`` and ``causal`` together) has no softmax to take;
        its attention output is zeros (not NaN, not the uniform average ``jax.nn.dot_product_attention``
        gives), so the layer's output for it is the output projection's bias.

    Decode mode:
        Cross-attention needs no cache (its keys are all there): it attends the ``L`` queries at positions ``t
        ..`` to the whole memory. Self-attention decodes with ``causal=True`` only: ``init(...,
        context={"decode": ShapeDtypeStruct((B, max_length), int32)})`` makes the state ``{"cache": {"key": (B,
        max_length, K, key_size), "value": (B, max_length, K, value_size)}}`` (zeros, in the input's dtype).
        ``apply(..., context={"decode": t})`` on ``(B, L, C)`` writes the keys and values of positions ``t ..
        t+L-1`` into the cache and attends each query to the cached positions up to its own, so a prompt is
        prefilled with ``t=0`` and then one step per call; ``t + L <= max_length`` (checked when ``t`` is a
        Python int). A mask side input then covers the cache: ``(B, max_length)`` or ``(B, L, max_length)``.

    Raises:
        ValueError, TypeError: for a bad argument (``num_heads`` not a multiple of ``num_kv_heads``).
        ShapeError: at init, for an input that is not one ``(N, T, C)`` array or such a dict, or a mask or
            bias of the wrong shape; InputTypeError for their dtypes.
        MissingInputError: a named side input is not in the context.
        MissingKeyError: ``dropout > 0`` and ``train=True`` without a key.
    """
    flags = {"causal": causal, "use_bias": use_bias, "rotary": rotary}
    _check_config(num_heads, key_size, value_size, out_features, num_kv_heads, dropout, flags, rotary_base,
                  {"mask": mask, "bias": bias, "memory": memory})
    kv_heads = num_heads if num_kv_heads is None else num_kv_heads
    v_size = key_size if value_size is None else value_size
    names = ("w", "b") if use_bias else ("w",)
    head_shapes = {"query": (num_heads, key_size), "key": (kv_heads, key_size), "value": (kv_heads, v_size)}

    def check_side_inputs(context: Context | None, steps: int | None, key_steps: int | None,
                          batch: int | None) -> tuple[Any, Any]:
        padding = None if mask is None else side_input(context, mask, _KIND)
        extra = None if bias is None else side_input(context, bias, _KIND)
        if padding is not None:
            _check_mask(padding, mask, steps, key_steps, batch)
        if extra is not None:
            _check_bias(extra, bias, num_heads, steps, key_steps)
        return padding, extra

    def init(key: Key, input_spec: Any, *, context: Context | None = None) -> tuple[Any, Params, State]:
        memory_spec = None if memory is None else side_input(context, memory, _KIND)
        q_spec, k_spec, v_spec, self_attention = _split_inputs(as_spec(input_spec), memory_spec)
        label = _labels(self_attention, memory)
        specs = {"query": q_spec, "key": k_spec, "value": v_spec}
        for part, s in specs.items():
            array_spec(s, dtype=jnp.floating, name=label[part])
            _check_sequence(s.shape, label[part])
        if k_spec.shape[1] != v_spec.shape[1]:
            raise ShapeError(f"{_KIND}: the key and value must have the same number of steps, got key "
                             f"{format_shape(k_spec.shape)} and value {format_shape(v_spec.shape)}.")
        cache_size = decode_cache_size(context) if self_attention else None
        if cache_size is not None and not causal:
            raise LayerError(f"{_KIND} with causal=False cannot decode step by step: a step would need the "
                             "keys of later steps.", hint="build it with causal=True to decode.")
        key_steps = k_spec.shape[1] if cache_size is None else cache_size[1]
        check_side_inputs(context, q_spec.shape[1], key_steps, None)
        out = q_spec.shape[-1] if out_features is None else out_features
        keys = dict(zip(_PROJECTIONS, jax.random.split(key, 4), strict=True))
        params = {}
        for part in ("query", "key", "value"):
            shape = (specs[part].shape[-1], *head_shapes[part])
            params[part] = {"w": jax.nn.initializers.glorot_uniform(in_axis=0, out_axis=(1, 2))(
                keys[part], shape, jnp.float32)}
        params["output"] = {"w": jax.nn.initializers.glorot_uniform(in_axis=(0, 1), out_axis=2)(
            keys["output"], (num_heads, v_size, out), jnp.float32)}
        if use_bias:
            for part in ("query", "key", "value"):
                params[part]["b"] = jnp.zeros(head_shapes[part], jnp.float32)
            params["output"]["b"] = jnp.zeros((out,), jnp.float32)
        state = {}
        if cache_size is not None:
            state = {"cache": {part: jnp.zeros((cache_size[0], cache_size[1], *head_shapes[part]), q_spec.dtype)
                               for part in ("key", "value")}}
        return spec((None, q_spec.shape[1], out), q_spec.dtype), params, state

    def project(params: Params, part: str, x: Array, label: str) -> Array:
        weights = get_params(params, names)
        w = weights[0]
        if tuple(w.shape[1:]) != head_shapes[part] or use_bias and tuple(weights[1].shape) != head_shapes[part]:
            raise ParamsError(f"params['{part}'] have shapes {[tuple(p.shape) for p in weights]} for {list(names)}, "
                              f"but this layer's {part} heads are {head_shapes[part]}.",
                              hint="were these params made by init of the same model?")
        check_floating(x)
        _check_sequence(tuple(x.shape), label)
        check_input_shape(x, (None, None, w.shape[0]), f"params['{part}']['w'] has shape {tuple(w.shape)}")
        y = jnp.einsum("ntc,chd->nthd", x, as_compute(w, x))
        return y + as_compute(weights[1], x) if use_bias else y

    def apply(params: Params, state: State, x: Any, *, key: Key | None = None,
              train: bool = False, context: Context | None = None) -> tuple[Array, State]:
        memory_in = None if memory is None else side_input(context, memory, _KIND)
        q_in, k_in, v_in, self_attention = _split_inputs(x, memory_in)
        label = _labels(self_attention, memory)
        parts = dict(zip(_PROJECTIONS, get_params(params, _PROJECTIONS), strict=True))
        q = project(parts["query"], "query", q_in, label["query"])
        k = project(parts["key"], "key", k_in, label["key"])
        v = project(parts["value"], "value", v_in, label["value"]).astype(k.dtype)
        if k.dtype != q.dtype:
            raise ShapeError(f"{_KIND}: query and key must have the same dtype, got {q.dtype} and {k.dtype}.")
        decoding = context is not None and "decode" in context
        q_positions = jnp.arange(q.shape[1], dtype=jnp.int32)
        k_positions = jnp.arange(k.shape[1], dtype=jnp.int32)
        new_state = state
        if decoding and not self_attention:
            # The memory is whole: only the queries' positions move.
            q_positions = q_positions + start_position(context)
        elif decoding:
            if not causal:
                raise LayerError(f"{_KIND} decodes only as causal self-attention (causal=True).",
                                 hint="build it with causal=True, and init it with context['decode'] too.")
            start = _decode_start(context["decode"], q.shape, state)
            q_positions = q_positions + start
            k_positions = q_positions
        if rotary:
            q, k = rotate(q, q_positions, rotary_base), rotate(k, k_positions, rotary_base)
        if decoding and self_attention:
            cache = {part: jax.lax.dynamic_update_slice_in_dim(state["cache"][part], new.astype(
                state["cache"][part].dtype), start, axis=1) for part, new in (("key", k), ("value", v))}
            new_state = {**state, "cache": cache}
            k, v = cache["key"].astype(q.dtype), cache["value"].astype(q.dtype)
            k_positions = jnp.arange(k.shape[1], dtype=jnp.int32)
        padding, extra = check_side_inputs(context, q.shape[1], k.shape[1], q.shape[0])
        if dropout > 0 and train and key is None:
            raise MissingKeyError(f"{_KIND} with dropout={dropout} and train=True needs a random key, got key=None.",
                                  hint="pass key=jax.random.key(seed) to apply (fit and the train step do this).")
        attention_mask = combined_mask(q_positions, k_positions, causal=causal, padding=padding)
        # Only the user's mask can leave a query without keys: a causal one always keeps position 0.
        heads = attend(q, k, v, bias=extra, mask=attention_mask, rate=dropout,
                       key=key if dropout > 0 and train else None, rows_may_be_empty=padding is not None)
        out_weights = get_params(parts["output"], names)
        y = jnp.einsum("nthd,hdo->nto", heads, as_compute(out_weights[0], heads))
        if use_bias:
            y = y + as_compute(out_weights[1], y)
        return y, new_state

    config = {"num_heads": num_heads, "key_size": key_size, "value_size": value_size, "out_features": out_features,
              "num_kv_heads": num_kv_heads, "dropout": dropout, "causal": causal, "use_bias": use_bias,
              "rotary": rotary, "rotary_base": rotary_base, "mask": mask, "bias": bias, "memory": memory}
    return Layer(init, apply, _KIND, config, (), name)


def _decode_start(value: Any, query_shape: tuple, state: State) -> Array:
    """The int32 start position of a decode step, checked against the cache (its position when a Python int)."""
    if not isinstance(state, Mapping) or "cache" not in state or set(state["cache"]) != {"key", "value"}:
        raise ParamsError(f"{_KIND} in decode mode needs the cache state, {{'cache': {{'key', 'value'}}}}, got "
                          f"{sorted(state) if isinstance(state, Mapping) else type(state).__name__}.",
                          hint="init the model with context={'decode': jax.ShapeDtypeStruct((batch, max_length), "
                          "jnp.int32)} and pass that state.")
    batch, max_length = state["cache"]["key"].shape[:2]
    steps = query_shape[1]
    if query_shape[0] != batch:
        raise ShapeError(f"{_KIND}: the decode cache holds a batch of {batch}, got an input of batch {query_shape[0]}.",
                         hint="init with context['decode'] of the batch size you decode.")
    if isinstance(value, (int, np.integer)) and not 0 <= value <= max_length - steps:
        raise ShapeError(f"{_KIND}: decoding {steps} step(s) at position {value} needs positions {value} .. "
                         f"{value + steps - 1}, but the cache holds {max_length} (0 .. {max_length - 1}).",
                         hint="init with a larger max_length in context['decode'].")
    return jnp.asarray(value, jnp.int32)
