"""The layer contract, written once.

A layer is a :class:`Layer`: a pair of pure functions plus a description of itself.

Specs
    A *spec* describes a model's input or output without data: a pytree (tuples, lists, dicts,
    ``None`` for an absent entry) of ``jax.ShapeDtypeStruct`` leaves whose batch axis (axis 0) is
    ``None``. :func:`spec` builds one leaf (``fn.spec((None, 28, 28, 1), "float32")``),
    :func:`spec_of` gives the spec of concrete arrays. Wherever a spec is taken, a plain shape
    tuple (items all int or None, such as ``(None, 784)``; a batch size of ``-1`` or any number is
    read as None) stands for a float32 array of that shape, so ``model.init(key, (None, 784))``
    works as it reads.

``init(key, spec, *, context=None) -> (output_spec, params, state)``
    Builds parameters and layer state from a spec alone; it never sees data. The output spec is
    a spec too (batch axis None). A layer with one input calls :func:`array_spec` first, which
    checks that it got exactly one array and, where the layer cares, its dtype; layers with
    several inputs take a tuple, list or dict of specs.

``apply(params, state, x, *, key=None, train=False, context=None) -> (y, new_state)``
    Runs the layer on ``x``, any pytree of arrays matching the spec given to ``init``. ``key`` is
    a ``jax.random`` key, needed only by random layers (Dropout) when ``train=True``; ``train``
    switches training behaviour (Dropout drops, BatchNorm uses batch statistics and updates its
    running ones). Layers without state return the state they got.

``context``: side inputs
    A mapping from names to side inputs (a padding mask, a conditioning vector): to arrays at
    apply, to their specs at init. Combinators pass it unchanged to every child, like ``key``
    and ``train``; :func:`funcnet.with_context` moves named entries of a dict input into it, so a
    layer deep in a stack reads ``side_input(context, "padding_mask", kind)`` without every block
    threading tuples.

``penalty(params) -> scalar`` (optional)
    A term the layer adds to the training loss, from its own params alone (a weight
    regulariser). Combinators give themselves the sum of their children's penalties, each on the
    child's slice of params; :func:`penalty` evaluates a whole model's, and the train step adds it
    to the loss. ``None`` (the default) adds nothing and costs nothing.

Decode mode
    A layer that generates step by step keeps its cache in ``state`` and reads the step from the
    side input ``"decode"``: see the custom-layer guide.

Invariants every layer keeps:

* ``apply`` is pure: its outputs depend only on its arguments, so ``jax.jit``, ``jax.grad`` and
  ``jax.vmap`` apply to it directly.
* ``params`` and ``state`` are plain nested dicts of arrays with readable names
  (``{"dense_0": {"w": ..., "b": ...}}``); a layer without any returns ``{}``.
* The output of ``apply`` has the structure, shapes and dtypes of the spec ``init`` returned
  (with the actual batch size).
* Batch convention: the leading axis of every array is the batch; images are channels-last
  (NHWC, and NWC / NDHWC for 1-D / 3-D). Each example's result depends on that example alone
  (BatchNorm in training mode is the documented exception).
* Compute dtype follows the input: parameters are stored in float32 and cast to the input's
  floating dtype, so bfloat16 inputs give bfloat16 outputs.
* Combinators hand every child the ``train`` flag, the ``context``, its own slice of ``params``
  and ``state``, and its own key, derived as ``jax.random.fold_in(key, position)``: deterministic
  and never reused.

Errors: shape, dtype and parameter problems raise :class:`LayerError` subclasses while the model
is built or traced, never as raw XLA errors; combinators add where in the model they happened
(the failing layer's path and the path of the layer that produced its input). A dtype problem
(:class:`InputTypeError`) is a :class:`ShapeError` too: the dtype is part of the spec.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

# The errors and the spec helpers live in their own modules; they are part of this contract, and
# layer authors import them from here.
from funcnet.errors import (  # noqa: F401
    InputTypeError,
    LayerError,
    MissingInputError,
    MissingKeyError,
    ParamsError,
    ShapeError,
)
from funcnet.specs import (  # noqa: F401
    Context,
    Spec,
    array_spec,
    as_spec,
    check_dtype,
    describe_inputs,
    format_shape,
    format_spec,
    is_shape,
    side_input,
    spec,
    spec_of,
    traceable,
)

Array = jax.Array
Key = jax.Array
Shape = tuple[int, ...]
Params = dict[str, Any]
State = dict[str, Any]
Initializer = Callable[..., Array]


class InitFn(Protocol):
    def __call__(self, key: Key, input_spec: Spec, *, context: Context | None = None) -> tuple[Spec, Params, State]:
        """Returns ``(output_spec, params, state)`` for ``input_spec``."""


class ApplyFn(Protocol):
    def __call__(
        self, params: Params, state: State, x: Any, *, key: Key | None = None, train: bool = False,
        context: Context | None = None,
    ) -> tuple[Any, State]:
        """Returns ``(output, new_state)``."""


PenaltyFn = Callable[[Params], Array]


class Layer(NamedTuple):
    """A layer: its two pure functions and a description of itself.

    Attributes:
        init: ``(key, spec, *, context=None) -> (output_spec, params, state)``.
        apply: ``(params, state, x, *, key=None, train=False, context=None) -> (output, new_state)``.
        kind: the constructor's name (``"Dense"``); default names derive from it (``dense_0``).
        config: the constructor's arguments that define the architecture, as JSON-able values.
        children: sublayers, for combinators.
        name: a name the user gave; combinators use it as the key in ``params`` and ``state``.
        penalty: ``params -> scalar`` added to the training loss, or None for none.
    """

    init: InitFn
    apply: ApplyFn
    kind: str
    config: Mapping[str, Any] = {}
    children: tuple[Layer, ...] = ()
    name: str | None = None
    penalty: PenaltyFn | None = None


def penalty(layer: Layer, params: Params) -> Array:
    """The term ``layer`` (a whole model, say) adds to the training loss: 0.0 if it has none.

    Args:
        layer: the layer or model.
        params: its params, as ``init`` made them.

    Returns:
        A float32 scalar: the sum of the penalties of every layer in it that has one.
    """
    return jnp.zeros((), jnp.float32) if layer.penalty is None else layer.penalty(params)


def children_penalty(children: Sequence[Layer], names: Sequence[str]) -> PenaltyFn | None:
    """The penalty of a container whose params are ``{child_name: child_params}``: the sum of its
    children's, each on its own slice; None when no child has one (so nothing is traced)."""
    scored = [(name, child) for name, child in zip(names, children, strict=True) if child.penalty is not None]
    if not scored:
        return None

    def summed(params: Params) -> Array:
        return sum(child.penalty(params.get(name, {})) for name, child in scored)

    return summed


# --------------------------------------------------------------------------------------------
# Helpers for layer authors


def check_positive(value: Any, argument: str, kind: str) -> None:
    """Raises ``ValueError`` unless ``value`` is a positive int (or a sequence of them)."""
    values = value if isinstance(value, Sequence) else (value,)
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
        raise ValueError(f"{kind}: `{argument}` must be a positive integer, got {value!r}.")


def check_rank(shape: Shape, rank: int, layout: str, hint: str | None = None) -> None:
    """Raises :class:`ShapeError` unless ``shape`` has exactly ``rank`` axes."""
    if not isinstance(shape, tuple) or len(shape) != rank:
        raise ShapeError(f"expected input of rank {rank} {layout}, got shape {format_shape(shape)}.", hint=hint)


def check_floating(x: Array) -> None:
    """Raises :class:`InputTypeError` unless ``x`` has a floating dtype."""
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise InputTypeError(
            f"expected a floating-point input, got dtype {x.dtype}.",
            hint="convert it first, for example `x.astype('float32') / 255` for 8-bit images.",
        )


def check_input_shape(x: Array, expected: Shape, built_from: str) -> None:
    """At apply time: raises :class:`ShapeError` unless ``x`` matches ``expected`` past the batch.

    ``expected`` holds ``None`` for axes that may take any size; ``built_from`` says which
    parameter fixed the expected sizes, for the message.
    """
    actual = tuple(x.shape)
    ok = len(actual) == len(expected) and all(
        e is None or e == a for e, a in zip(expected[1:], actual[1:], strict=True)
    )
    if not ok:
        shown = format_shape(tuple("N" if e is None else e for e in expected))
        raise ShapeError(
            f"was built for inputs of shape {shown} ({built_from}), got {format_shape(actual)}.",
            hint="inputs must have the shape the model was initialised with, and params must come "
            "from the same architecture.",
        )


def get_params(params: Params, names: Sequence[str]) -> list[Array]:
    """Returns ``params[name]`` for each name, or raises :class:`ParamsError` naming what is missing."""
    if not isinstance(params, Mapping):
        raise ParamsError(f"expected params to be a dict with keys {list(names)}, got {type(params).__name__}.")
    missing = [n for n in names if n not in params]
    extra = [n for n in params if n not in names]
    if missing or extra:
        raise ParamsError(
            f"params do not match this layer: missing {missing}, unexpected {extra}.",
            hint="were these params made by init of the same model?",
        )
    return [params[n] for n in names]


def as_compute(param: Array, x: Array) -> Array:
    """Casts a stored parameter to the input's dtype (compute dtype follows the input)."""
    return jnp.asarray(param, dtype=x.dtype)


def child_key(key: Key | None, position: int) -> Key | None:
    """The key for a combinator's child at ``position``: ``fold_in`` keeps it distinct and unused
    children cost nothing (XLA drops the dead computation)."""
    return None if key is None else jax.random.fold_in(key, position)


def child_names(children: Sequence[Layer]) -> list[str]:
    """Names children within one container: the user's name, else ``<kind>_<count per kind>``."""
    counts: dict[str, int] = {}
    names = []
    for child in children:
        if child.name is not None:
            names.append(child.name)
            continue
        base = child.kind.lower()
        names.append(f"{base}_{counts.get(base, 0)}")
        counts[base] = counts.get(base, 0) + 1
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"layer names must be unique within a container; repeated: {duplicates}.")
    return names


def check_callable(value: Any, argument: str, kind: str) -> None:
    """Raises ``TypeError`` unless ``value`` (an initializer, say) can be called."""
    if not callable(value):
        raise TypeError(f"{kind}: `{argument}` must be a callable, such as an initializer from "
                        f"jax.nn.initializers (e.g. jax.nn.initializers.he_normal()), got "
                        f"{type(value).__name__} {value!r:.80}.")
