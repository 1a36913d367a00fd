"""Pre-norm transformer blocks, built from the public layers and combinators.

An encoder block is two residual branches over ``(N, T, C)``::

    x = x + Dropout(MultiHeadAttention(Norm(x)))                 # "self_attention"
    x = x + Dropout(Dense(C)(activation(Dense(mlp_dim)(Norm(x))))) # "mlp"

A decoder block makes the self-attention causal and, given the name of a memory side input,
adds a cross-attention branch between the two, ``x = x + Dropout(MultiHeadAttention(Norm(x),
memory))`` (``"cross_attention"``). The sublayers depend on the input's width
``C`` (the MLP's output, the default ``key_size``), so each block builds them from the input's
spec at init and from the input at apply with :func:`encoder_layers` / :func:`decoder_layers`;
printing those shows the whole block, and copying them is the way to change it.

Decode mode (see the custom-layer guide) goes through unchanged: the causal attention keeps its
key/value cache in the block's state, the other layers ignore it.
"""

from __future__ import annotations

from typing import Any

from funcnet.combinators import residual, serial
from funcnet.core import (
    Array,
    Context,
    Key,
    Layer,
    Params,
    ShapeError,
    State,
    as_spec,
    check_positive,
    format_spec,
)
from funcnet.layers.activations import resolve_activation
from funcnet.layers.attention import MultiHeadAttention
from funcnet.layers.dense import Dense
from funcnet.layers.dropout import Dropout, check_rate
from funcnet.layers.normalization import LayerNorm, RMSNorm

NORMS = {"layer": LayerNorm, "rms": RMSNorm}


def _check_config(kind: str, num_heads: Any, mlp_dim: Any, key_size: Any, dropout: Any, norm: Any,
                  activation: Any, flags: dict[str, Any]) -> None:
    check_positive(num_heads, "num_heads", kind)
    check_positive(mlp_dim, "mlp_dim", kind)
    if key_size is not None:
        check_positive(key_size, "key_size", kind)
    check_rate(dropout, "dropout", kind)
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
                   norm: str = "layer", activation: str = "gelu", rotary: bool = False, mask: str | None = None,
                   memory: str | None = None) -> Layer:
    """The layers of a :func:`TransformerDecoderBlock` for inputs of ``width`` features, as one ``serial``.

    Args:
        width: the input's feature count ``C``.
        num_heads, mlp_dim, key_size, dropout, norm, activation, rotary, mask, memory: as for
            :func:`TransformerDecoderBlock`.

    Returns:
        ``serial(self_attention, cross_attention, mlp)`` of ``residual`` branches (no
        ``cross_attention`` without ``memory``); params as the block's.
    """
    config = {"num_heads": num_heads, "mlp_dim": mlp_dim, "dropout": dropout, "norm": norm,
              "activation": activation, "rotary": rotary, "mask": mask,
              "key_size": _head_size("TransformerDecoderBlock", width, num_heads, key_size)}
    branches = [_attention_branch(config, True, "self_attention")]
    if memory is not None:
        cross = MultiHeadAttention(num_heads, config["key_size"], memory=memory, name="attention")
        branches.append(residual(NORMS[norm](name="norm"), cross, *_branch_end(dropout), name="cross_attention"))
    return serial(*branches, _mlp_branch(config, width))


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

    return _block("TransformerEncoderBlock", options, name)


def _block(kind: str, options: dict[str, Any], name: str | None) -> Layer:
    """A block whose layers (:func:`encoder_layers` or :func:`decoder_layers`) are built for the
    input's width, from its spec at init and from the array at apply."""
    layers = encoder_layers if kind == "TransformerEncoderBlock" else decoder_layers

    def init(key: Key, input_spec: Any, *, context: Context | None = None) -> tuple[Any, Params, State]:
        spec = as_spec(input_spec)
        return layers(_width(spec, kind), **options).init(key, spec, context=context)

    def apply(params: Params, state: State, x: Array, *, key: Key | None = None, train: bool = False,
              context: Context | None = None) -> tuple[Array, State]:
        return layers(_width(x, kind), **options).apply(params, state, x, key=key, train=train, context=context)

    return Layer(init, apply, kind, options, (), name)


def _width(x: Any, kind: str) -> int:
    if not hasattr(x, "shape") or len(x.shape) != 3:
        raise ShapeError(f"{kind} expects a sequence (batch, time, features), got {format_spec(x)}.")
    return x.shape[-1]


def TransformerDecoderBlock(num_heads: int, mlp_dim: int, *, key_size: int | None = None, dropout: float = 0.0,
                            norm: str = "layer", activation: str = "gelu", rotary: bool = False,
                            mask: str | None = None, memory: str | None = None, name: str | None = None) -> Layer:
    """A pre-norm transformer decoder block: causal self-attention, cross-attention to a memory, an MLP.

    ``x = x + Dropout(MultiHeadAttention(Norm(x)))`` (causal), then, when ``memory`` names a side
    input, ``x = x + Dropout(MultiHeadAttention(Norm(x), memory))``, then the MLP branch of
    :func:`TransformerEncoderBlock`. Without ``memory`` there is no cross-attention (a decoder-only
    language model). See :func:`decoder_layers` for the layers.

    Args:
        num_heads, mlp_dim, key_size, dropout, norm, activation, rotary, name: as for
            :func:`TransformerEncoderBlock`.
        mask: the name of a bool side input for the self-attention (a padding mask ``(N, T)``),
            combined with the causal mask.
        memory: the name of a side input ``(N, S, Cm)`` (an encoder's output) to cross-attend to. As a
            side input it reaches every block of a stack: ``fn.with_context(fn.serial(block, block),
            "memory")`` takes ``{"x": x, "memory": memory}``.

    Shapes:
        ``(N, T, C) -> (N, T, C)``.

    Params:
        ``{"self_attention": ..., "mlp": ...}`` as for the encoder block, plus (with memory)
        ``"cross_attention": {"norm": ..., "attention": <MultiHeadAttention's, key (Cm, H, key_size)>}``.

    Decode mode:
        The causal self-attention keeps its cache; the cross-attention reads the whole memory at each step.
    """
    _check_config("TransformerDecoderBlock", num_heads, mlp_dim, key_size, dropout, norm, activation,
                  {"rotary": rotary})
    options = {"num_heads": num_heads, "mlp_dim": mlp_dim, "key_size": key_size, "dropout": dropout, "norm": norm,
               "activation": activation, "rotary": rotary, "mask": mask, "memory": memory}

    return _block("TransformerDecoderBlock", options, name)


__all__ = ["TransformerDecoderBlock", "TransformerEncoderBlock", "decoder_layers", "encoder_layers"]
