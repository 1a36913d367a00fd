"""Pre-norm transformer blocks, built from the public layers and combinators.

An encoder block is two residual branches over ``(N, T, C)``::

    x = x + Dropout(MultiHeadAttention(Norm(x)))                 # "self_attention"
    x = x + Dropout(Dense(C)(activation(Dense(mlp_dim)(Norm(x))))) # "mlp"

A decoder block makes the self-attention causal and, given a dict ``{"x": ..., "memory": ...}``,
adds a cross-attention branch between the two, ``x = x + Dropout(MultiHeadAttention({"query":
Norm(x), "key": memory}))`` (``"cross_attention"``). The sublayers depend on the input's width
``C`` (the MLP's output, the default ``key_size``), so each block builds them from the input's
spec at init and from the input at apply with :func:`encoder_layers` / :func:`decoder_layers`;
printing those shows the whole block, and copying them is the way to change it.

Decode mode (see the custom-layer guide) goes through unchanged: the causal attention keeps its
key/value cache in the block's state, the other layers ignore it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from funcnet.combinators import residual, serial
from funcnet.core import (
    Array,
    Context,
    Key,
    Layer,
    Params,
    ParamsError,
    ShapeError,
    State,
    as_spec,
    check_positive,
    child_key,
    format_spec,
)
from funcnet.layers.activations import resolve_activation
from funcnet.layers.attention import MultiHeadAttention
from funcnet.layers.dense import Dense
from funcnet.layers.dropout import Dropout
from funcnet.layers.normalization import LayerNorm, RMSNorm

NORMS = {"layer": LayerNorm, "rms": RMSNorm}


def _check_config(kind: str, num_heads: Any, mlp_dim: Any, key_size: Any, dropout: Any, norm: Any,
                  activation: Any, flags: dict[str, Any]) -> None:
    check_positive(num_heads, "num_heads", kind)
    check_positive(mlp_dim, "mlp_dim", kind)
    if key_size is not None:
        check_positive(key_size, "key_size", kind)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"{kind}: `dropout` is the probability of dropping and must be in [0, 1), got {dropout!r}.")
    if norm not in NORMS:
        raise ValueError(f"{kind}: `norm` must be one of {sorted(NORMS)}, got {norm!r}.")
    if not isinstance(activation, str):
        raise ValueError(f"{kind}: `activation` must be a name from ACTIVATIONS (so the block can be rebuilt from "
                         f"its description), got {activation!r}.")
    resolve_activation(activation, kind)
    for argument, value in flags.items():
        if not isinstance(value, bool):
            raise TypeError(f"{kind}: `{argument}` must be True or False, got {value!r}.")


def _head_size(kind: str, width: int, num_heads: int, key_size: int | None) -> int:
    if key_size is not None:
        return key_size
    if width % num_heads:
        raise ShapeError(f"{kind}: the input's {width} features do not split into num_heads={num_heads} heads.",
                         hint="give key_size explicitly, or a width divisible by num_heads.")
    return width // num_heads


def _branch_end(dropout: float) -> tuple[Layer, ...]:
    return (Dropout(dropout),) if dropout else ()


def _attention_branch(config: dict[str, Any], causal: bool, name: str) -> Layer:
    """``x -> x + Dropout(MultiHeadAttention(Norm(x)))``, self-attention."""
    attention = MultiHeadAttention(config["num_heads"], config["key_size"], causal=causal, rotary=config["rotary"],
                                   mask=config["mask"], name="attention")
    return residual(NORMS[config["norm"]](name="norm"), attention, *_branch_end(config["dropout"]), name=name)


def _mlp_branch(config: dict[str, Any], width: int) -> Layer:
    """``x -> x + Dropout(Dense(width)(Dense(mlp_dim, activation)(Norm(x))))``."""
    return residual(NORMS[config["norm"]](name="norm"),
                    Dense(config["mlp_dim"], activation=config["activation"], rank=3, name="hidden"),
                    Dense(width, rank=3, name="output"), *_branch_end(config["dropout"]), name="mlp")


def encoder_layers(width: int, *, num_heads: int, mlp_dim: int, key_size: int | None = None, dropout: float = 0.0,
                   causal: bool = False, norm: str = "layer", activation: str = "gelu", rotary: bool = False,
                   mask: str | None = None) -> Layer:
    """The layers of a :func:`TransformerEncoderBlock` for inputs of ``width`` features, as one ``serial``.

    Args:
        width: the input's feature count ``C``.
        num_heads, mlp_dim, key_size, dropout, causal, norm, activation, rotary, mask: as for
            :func:`TransformerEncoderBlock`.

    Returns:
        ``serial(self_attention, mlp)``, two ``residual`` branches; params
        ``{"self_attention": {"norm", "attention"}, "mlp": {"norm", "hidden", "output"}}``.
    """
    config = {"num_heads": num_heads, "mlp_dim": mlp_dim, "dropout": dropout, "norm": norm,
              "activation": activation, "rotary": rotary, "mask": mask,
              "key_size": _head_size("TransformerEncoderBlock", width, num_heads, key_size)}
    return serial(_attention_branch(config, causal, "self_attention"), _mlp_branch(config, width))


def decoder_layers(width: int, *, num_heads: int, mlp_dim: int, key_size: int | None = None, dropout: float = 0.0,
                   norm: str = "layer", activation: str = "gelu", rotary: bool = False,
                   mask: str | None = None) -> dict[str, Layer]:
    """The sublayers of a :func:`TransformerDecoderBlock` for inputs of ``width`` features.

    Returns:
        ``{"self_attention": residual (causal), "cross_attention": {"norm": ..., "attention": ...}``
        as a ``serial`` of the norm and a MultiHeadAttention taking ``{"query", "key"}``,
        ``"mlp": residual}``; the block runs ``self_attention``, then (with memory)
        ``x + cross_attention``, then ``mlp``.
    """
    config = {"num_heads": num_heads, "mlp_dim": mlp_dim, "dropout": dropout, "norm": norm,
              "activation": activation, "rotary": rotary, "mask": mask,
              "key_size": _head_size("TransformerDecoderBlock", width, num_heads, key_size)}
    cross = {"norm": NORMS[norm](name="norm"),
             "attention": MultiHeadAttention(num_heads, config["key_size"], name="attention"),
             "end": serial(*_branch_end(dropout))}
    return {"self_attention": _attention_branch(config, True, "self_attention"),
            "cross_attention": cross, "mlp": _mlp_branch(config, width)}


def TransformerEncoderBlock(num_heads: int, mlp_dim: int, *, key_size: int | None = None, dropout: float = 0.0,
                            causal: bool = False, norm: str = "layer", activation: str = "gelu",
                            rotary: bool = False, mask: str | None = None, name: str | None = None) -> Layer:
    """A pre-norm transformer encoder block: self-attention, then an MLP, each a residual branch.

    ``x = x + Dropout(MultiHeadAttention(Norm(x)))``, then
    ``x = x + Dropout(Dense(C)(activation(Dense(mlp_dim)(Norm(x)))))``; see :func:`encoder_layers`
    for the layers themselves.

    Args:
        num_heads: attention heads.
        mlp_dim: the MLP's hidden width.
        key_size: size of each head (default ``C // num_heads``).
        dropout: drop probability at the end of each residual branch, while training.
        causal: each position attends only to itself and earlier ones (a language model).
        norm: ``"layer"`` (LayerNorm) or ``"rms"`` (RMSNorm).
        activation: the MLP's activation, by name (``"gelu"``, ``"relu"``, see ``ACTIVATIONS``).
        rotary: rotary position embeddings in the attention.
        mask: the name of a bool side input (padding mask ``(N, T)`` or ``(N, T, T)``), True where a
            query may attend; see :func:`funcnet.with_context`.
        name: this layer's name in an enclosing model.

    Shapes:
        ``(N, T, C) -> (N, T, C)``.

    Params:
        ``{"self_attention": {"norm": ..., "attention": <MultiHeadAttention's>}, "mlp": {"norm": ...,
        "hidden": {"w": (C, mlp_dim), "b"}, "output": {"w": (mlp_dim, C), "b"}}}``.
    """
    flags = {"causal": causal, "rotary": rotary}
    _check_config("TransformerEncoderBlock", num_heads, mlp_dim, key_size, dropout, norm, activation, flags)
    options = {"num_heads": num_heads, "mlp_dim": mlp_dim, "key_size": key_size, "dropout": dropout,
               "causal": causal, "norm": norm, "activation": activation, "rotary": rotary, "mask": mask}

    def layers_for(width: int) -> Layer:
        return encoder_layers(width, **options)

    def init(key: Key, input_spec: Any, *, context: Context | None = None) -> tuple[Any, Params, State]:
        spec = as_spec(input_spec)
        return layers_for(_width(spec, "TransformerEncoderBlock")).init(key, spec, context=context)

    def apply(params: Params, state: State, x: Array, *, key: Key | None = None, train: bool = False,
              context: Context | None = None) -> tuple[Array, State]:
        return layers_for(_width(x, "TransformerEncoderBlock")).apply(params, state, x, key=key, train=train,
                                                                       context=context)

    return Layer(init, apply, "TransformerEncoderBlock", options, (), name)


def _width(x: Any, kind: str) -> int:
    if not hasattr(x, "shape") or len(x.shape) != 3:
        raise ShapeError(f"{kind} expects a sequence (batch, time, features), got {format_spec(x)}.")
    return x.shape[-1]


def _split_decoder_input(x: Any) -> tuple[Any, Any]:
    """``(x, memory or None)`` of a decoder block's input (specs at init, arrays at apply)."""
    if isinstance(x, Mapping):
        if sorted(x) != ["memory", "x"]:
            raise ShapeError(f"TransformerDecoderBlock takes (N, T, C) or a dict with keys 'x' and 'memory', got "
                             f"keys {sorted(x)}.")
        return x["x"], x["memory"]
    return x, None


def TransformerDecoderBlock(num_heads: int, mlp_dim: int, *, key_size: int | None = None, dropout: float = 0.0,
                            norm: str = "layer", activation: str = "gelu", rotary: bool = False,
                            mask: str | None = None, name: str | None = None) -> Layer:
    """A pre-norm transformer decoder block: causal self-attention, cross-attention to a memory, an MLP.

    ``x = x + Dropout(MultiHeadAttention(Norm(x)))`` (causal), then, when the input is a dict
    ``{"x": x, "memory": memory}``, ``x = x + Dropout(MultiHeadAttention({"query": Norm(x), "key":
    memory}))``, then the MLP branch of :func:`TransformerEncoderBlock`. A plain array input has no
    cross-attention (a decoder-only language model). See :func:`decoder_layers` for the layers.

    Args:
        num_heads, mlp_dim, key_size, dropout, norm, activation, rotary, name: as for
            :func:`TransformerEncoderBlock`.
        mask: the name of a bool side input for the self-attention (a padding mask ``(N, T)``),
            combined with the causal mask.

    Shapes:
        ``(N, T, C) -> (N, T, C)``, or ``{"x": (N, T, C), "memory": (N, S, Cm)} -> (N, T, C)``: the
        output is the sequence alone.

    Params:
        ``{"self_attention": ..., "mlp": ...}`` as for the encoder block, plus (with memory)
        ``"cross_attention": {"norm": ..., "attention": <MultiHeadAttention's, key (Cm, H, key_size)>}``.

    Decode mode:
        Plain array inputs only (the causal self-attention's cache); cross-attention does not decode.
    """
    _check_config("TransformerDecoderBlock", num_heads, mlp_dim, key_size, dropout, norm, activation,
                  {"rotary": rotary})
    options = {"num_heads": num_heads, "mlp_dim": mlp_dim, "key_size": key_size, "dropout": dropout, "norm": norm,
               "activation": activation, "rotary": rotary, "mask": mask}

    def init(key: Key, input_spec: Any, *, context: Context | None = None) -> tuple[Any, Params, State]:
        x_spec, memory_spec = _split_decoder_input(as_spec(input_spec))
        parts = decoder_layers(_width(x_spec, "TransformerDecoderBlock"), **options)
        params, state = {}, {}
        spec, params["self_attention"], state["self_attention"] = parts["self_attention"].init(
            child_key(key, 0), x_spec, context=context)
        if memory_spec is not None:
            cross = parts["cross_attention"]
            normed, norm_params, _ = cross["norm"].init(child_key(key, 1), spec, context=context)
            spec, attention_params, _ = cross["attention"].init(child_key(key, 2), {"query": normed,
                                                                                     "key": memory_spec})
            params["cross_attention"] = {"norm": norm_params, "attention": attention_params}
        spec, params["mlp"], state["mlp"] = parts["mlp"].init(child_key(key, 3), spec, context=context)
        return spec, params, {k: v for k, v in state.items() if v}

    def apply(params: Params, state: State, x: Any, *, key: Key | None = None, train: bool = False,
              context: Context | None = None) -> tuple[Array, State]:
        x, memory = _split_decoder_input(x)
        parts = decoder_layers(_width(x, "TransformerDecoderBlock"), **options)
        expected = {"self_attention", "mlp"} | ({"cross_attention"} if memory is not None else set())
        if not isinstance(params, Mapping) or set(params) != expected:
            got = sorted(params) if isinstance(params, Mapping) else type(params).__name__
            raise ParamsError(f"TransformerDecoderBlock params must have entries {sorted(expected)}, got {got}.",
                              hint="were these params made by init with the same kind of input (with or without "
                              "memory)?")
        new_state = {}
        x, new_state["self_attention"] = parts["self_attention"].apply(
            params["self_attention"], state.get("self_attention", {}), x, key=child_key(key, 0), train=train,
            context=context)
        if memory is not None:
            cross, cross_params = parts["cross_attention"], params["cross_attention"]
            normed, _ = cross["norm"].apply(cross_params["norm"], {}, x)
            attended, _ = cross["attention"].apply(cross_params["attention"], {}, {"query": normed, "key": memory},
                                                   key=child_key(key, 2), train=train)
            attended, _ = cross["end"].apply({}, {}, attended, key=child_key(key, 4), train=train)
            x = x + attended.astype(x.dtype)
        x, new_state["mlp"] = parts["mlp"].apply(params["mlp"], state.get("mlp", {}), x, key=child_key(key, 3),
                                                 train=train, context=context)
        return x, {k: v for k, v in new_state.items() if v}

    return Layer(init, apply, "TransformerDecoderBlock", options, (), name)


__all__ = ["TransformerDecoderBlock", "TransformerEncoderBlock", "decoder_layers", "encoder_layers"]
