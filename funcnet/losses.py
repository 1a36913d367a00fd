"""Loss functions, thin over ``optax.losses``, under the names Keras users know.

Every loss has the signature ``loss(y_true, y_pred, weights=None) -> scalar``: it computes one
value per example (averaging over any non-batch axes), then returns their mean, or their
weighted mean ``sum(w * l) / sum(w)`` when ``weights`` of shape ``(N,)`` are given (a 0/1 mask
drops examples; examples with weight 0 never contribute, even if their loss is NaN). Weights of
the per-element shape (``(N, T)`` for sequences) weight each element instead.

Losses compute in at least float32 (bfloat16 predictions are upcast). Shapes and dtypes are
checked when the function is traced, so a mistake is an error, not a silently wrong loss; label
*values* (class indices out of range) are checked at the host boundary by :func:`fit` and
:func:`funcnet.training.check_labels`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from funcnet.core import Array, format_shape

__all__ = [
    "LOSSES",
    "binary_crossentropy",
    "categorical_crossentropy",
    "get_loss",
    "huber",
    "label_kind",
    "mean_absolute_error",
    "mean_squared_error",
    "sparse_categorical_crossentropy",
]

LossFn = Callable[..., Array]


def _compute_dtype(x: Array) -> Any:
    return jnp.promote_types(x.dtype, jnp.float32)


def _reduce(per_element: Array, weights: Array | None) -> Array:
    """Mean over examples (each example's value being the mean over its other axes)."""
    if weights is None:
        if per_element.ndim > 1:
            per_element = per_element.reshape(per_element.shape[0], -1).mean(axis=1)
        return jnp.mean(per_element)
    weights = jnp.asarray(weights)
    if weights.shape == per_element.shape and per_element.ndim > 1:
        values = per_element
    elif weights.shape == per_element.shape[:1]:
        values = per_element.reshape(per_element.shape[0], -1).mean(axis=1) if per_element.ndim > 1 else per_element
    else:
        raise ValueError(
            f"weights must have shape {format_shape(per_element.shape[:1])} (one per example) or "
            f"{format_shape(per_element.shape)} (one per element), got {format_shape(weights.shape)}."
        )
    weights = weights.astype(values.dtype)
    total = jnp.sum(jnp.where(weights != 0, values * weights, 0))
    weight = jnp.sum(weights)
    return jnp.where(weight != 0, total / jnp.where(weight != 0, weight, 1), 0)


def _check_label_smoothing(label_smoothing: float, name: str) -> None:
    if not 0 <= label_smoothing < 1:
        raise ValueError(f"{name}: `label_smoothing` must be in [0, 1), got {label_smoothing!r}.")


def _align(y_true: Array, y_pred: Array, name: str) -> Array:
    """Returns ``y_true`` shaped like ``y_pred``, allowing only a trailing axis of size 1 to differ.

    ``(N,)`` targets for ``(N, 1)`` predictions (and the reverse) are reshaped explicitly; any
    other mismatch is an error (broadcasting ``(N,)`` against ``(N, 1)`` would give ``(N, N)``).
    """
    if y_true.shape == y_pred.shape:
        return y_true
    if y_pred.shape == y_true.shape + (1,):
        return y_true[..., None]
    if y_true.shape == y_pred.shape + (1,):
        return y_true[..., 0]
    raise ValueError(
        f"{name}: y_true has shape {format_shape(y_true.shape)} but the predictions have shape "
        f"{format_shape(y_pred.shape)}; they must match (a trailing axis of size 1 may differ)."
    )


def sparse_categorical_crossentropy(
    y_true: Array, y_pred: Array, weights: Array | None = None, *, label_smoothing: float = 0.0
) -> Array:
    """Softmax cross-entropy with integer class labels, from logits.

    Args:
        y_true: integer class indices in ``[0, C)``, shape ``(N,)`` (or ``(N, ..., )`` matching
            the predictions without their last axis).
        y_pred: logits (unnormalised scores), shape ``(N, C)`` (or ``(N, ..., C)``).
        weights: optional per-example weights ``(N,)`` (or per-element, the labels' shape).
        label_smoothing: mixes the one-hot targets with the uniform distribution:
            ``(1 - a) * one_hot + a / C``.

    Returns:
        The (weighted) mean loss, a float32 scalar.

    Raises:
        TypeError: if the labels are not integers.
        ValueError: if the labels' shape is not the predictions' shape without the last axis.
    """
    name = "sparse_categorical_crossentropy"
    _check_label_smoothing(label_smoothing, name)
    y_true, y_pred = jnp.asarray(y_true), jnp.asarray(y_pred)
    # Shape first: for one-hot float rows the dtype advice (astype) would not fix anything.
    if y_true.shape != y_pred.shape[:-1]:
        hint = " Flatten the labels with y.reshape(-1)." if y_true.shape == y_pred.shape[:-1] + (1,) else ""
        if y_true.shape == y_pred.shape:
            hint = " These look like one-hot rows: use categorical_crossentropy, or y.argmax(-1)."
        raise ValueError(
            f"{name}: expected labels of shape {format_shape(y_pred.shape[:-1])} (one class index per "
            f"example) for predictions of shape {format_shape(y_pred.shape)}, got "
            f"{format_shape(y_true.shape)}.{hint}"
        )
    if not jnp.issubdtype(y_true.dtype, jnp.integer):
        raise TypeError(
            f"{name} expects integer class indices, got labels of dtype {y_true.dtype}. If they are "
            "whole numbers, convert them with y.astype('int32'); if they are one-hot or probabilities, "
            "use categorical_crossentropy."
        )
    logits = y_pred.astype(_compute_dtype(y_pred))
    if label_smoothing:
        targets = optax.smooth_labels(jax.nn.one_hot(y_true, logits.shape[-1], dtype=logits.dtype), label_smoothing)
        per_element = optax.losses.softmax_cross_entropy(logits, targets)
    else:
        per_element = optax.losses.softmax_cross_entropy_with_integer_labels(logits, y_true)
    return _reduce(per_element, weights)


def categorical_crossentropy(
    y_true: Array, y_pred: Array, weights: Array | None = None, *, label_smoothing: float = 0.0
) -> Array:
    """Softmax cross-entropy with one-hot or probability targets, from logits.

    Args:
        y_true: target distributions (one-hot rows or probabilities), shape ``(N, C)``.
        y_pred: logits, shape ``(N, C)`` (or ``(N, ..., C)`` with matching targets).
        weights: optional per-example weights ``(N,)``.
        label_smoothing: ``(1 - a) * y_true + a / C``.

    Returns:
        The (weighted) mean loss, a float32 scalar.

    Raises:
        ValueError: if the targets' shape differs from the predictions'.
    """
    name = "categorical_crossentropy"
    _check_label_smoothing(label_smoothing, name)
    y_true, y_pred = jnp.asarray(y_true), jnp.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        hint = (" These look like class indices: use sparse_categorical_crossentropy."
                if y_true.shape == y_pred.shape[:-1] else "")
        raise ValueError(
            f"{name}: expected targets of the predictions' shape {format_shape(y_pred.shape)} (one-hot "
            f"rows or probabilities), got {format_shape(y_true.shape)}.{hint}"
        )
    logits = y_pred.astype(_compute_dtype(y_pred))
    targets = y_true.astype(logits.dtype)
    if label_smoothing:
        targets = optax.smooth_labels(targets, label_smoothing)
    return _reduce(optax.losses.softmax_cross_entropy(logits, targets), weights)


def binary_crossentropy(
    y_true: Array,
    y_pred: Array,
    weights: Array | None = None,
    *,
    from_logits: bool = True,
    label_smoothing: float = 0.0,
    epsilon: float = 1e-7,
) -> Array:
    """Binary cross-entropy for one or several independent yes/no targets.

    Args:
        y_true: targets in ``[0, 1]`` (0/1 labels or probabilities), the predictions' shape or
            that shape without a trailing axis of size 1 (``(N,)`` for ``(N, 1)`` predictions).
        y_pred: logits (``from_logits=True``, the default) or probabilities, shape ``(N,)``,
            ``(N, 1)`` or ``(N, L)`` for L labels.
        weights: optional per-example weights ``(N,)``.
        from_logits: whether ``y_pred`` are logits; with ``False`` they are probabilities, clipped
            to ``[epsilon, 1 - epsilon]`` so that 0 and 1 give a finite loss.
        label_smoothing: ``(1 - a) * y_true + a / 2``.
        epsilon: the clipping margin for probabilities.

    Returns:
        The (weighted) mean over examples of the mean over labels, a float32 scalar.
    """
    name = "binary_crossentropy"
    _check_label_smoothing(label_smoothing, name)
    y_true, y_pred = jnp.asarray(y_true), jnp.asarray(y_pred)
    y_true = _align(y_true, y_pred, name)
    pred = y_pred.astype(_compute_dtype(y_pred))
    targets = y_true.astype(pred.dtype)
    if label_smoothing:
        targets = targets * (1 - label_smoothing) + 0.5 * label_smoothing
    if from_logits:
        per_element = optax.losses.sigmoid_binary_cross_entropy(pred, targets)
    else:
        p = jnp.clip(pred, epsilon, 1 - epsilon)
        per_element = -(targets * jnp.log(p) + (1 - targets) * jnp.log1p(-p))
    return _reduce(per_element, weights)


def mean_squared_error(y_true: Array, y_pred: Array, weights: Array | None = None) -> Array:
    """``mean((y_pred - y_true) ** 2)``; shapes as in :func:`binary_crossentropy`."""
    y_true, y_pred = jnp.asarray(y_true), jnp.asarray(y_pred)
    pred = y_pred.astype(_compute_dtype(y_pred))
    targets = _align(y_true, y_pred, "mean_squared_error").astype(pred.dtype)
    return _reduce(optax.losses.squared_error(pred, targets), weights)


def mean_absolute_error(y_true: Array, y_pred: Array, weights: Array | None = None) -> Array:
    """``mean(|y_pred - y_true|)``; shapes as in :func:`binary_crossentropy`."""
    y_true, y_pred = jnp.asarray(y_true), jnp.asarray(y_pred)
    pred = y_pred.astype(_compute_dtype(y_pred))
    targets = _align(y_true, y_pred, "mean_absolute_error").astype(pred.dtype)
    return _reduce(jnp.abs(pred - targets), weights)


def huber(y_true: Array, y_pred: Array, weights: Array | None = None, *, delta: float = 1.0) -> Array:
    """Huber loss: ``0.5 e**2`` for ``|e| <= delta``, ``delta * (|e| - 0.5 delta)`` beyond.

    ``e = y_pred - y_true``; shapes as in :func:`binary_crossentropy`.
    """
    if not delta > 0:
        raise ValueError(f"huber: `delta` must be positive, got {delta!r}.")
    y_true, y_pred = jnp.asarray(y_true), jnp.asarray(y_pred)
    pred = y_pred.astype(_compute_dtype(y_pred))
    targets = _align(y_true, y_pred, "huber").astype(pred.dtype)
    return _reduce(optax.losses.huber_loss(pred, targets, delta=delta), weights)


#: The names :func:`get_loss` accepts (Keras's, plus short aliases).
LOSSES: dict[str, LossFn] = {
    "sparse_categorical_crossentropy": sparse_categorical_crossentropy,
    "categorical_crossentropy": categorical_crossentropy,
    "binary_crossentropy": binary_crossentropy,
    "mean_squared_error": mean_squared_error,
    "mse": mean_squared_error,
    "mean_absolute_error": mean_absolute_error,
    "mae": mean_absolute_error,
    "huber": huber,
    "huber_loss": huber,
}

_LABEL_KINDS = {
    sparse_categorical_crossentropy: "class_index",
    categorical_crossentropy: "distribution",
    binary_crossentropy: "binary",
    mean_squared_error: "real",
    mean_absolute_error: "real",
    huber: "real",
}


def get_loss(loss: str | LossFn, **options: Any) -> LossFn:
    """Resolves a loss given by name (``"sparse_categorical_crossentropy"``, ``"mse"``, ...) or function.

    Args:
        loss: a name from :data:`LOSSES`, or a function ``(y_true, y_pred[, weights]) -> scalar``.
        **options: keyword options of the named loss (``label_smoothing=0.1``,
            ``from_logits=False``, ``delta=2.0``).

    Returns:
        The loss function, with ``options`` bound.

    Raises:
        ValueError: for an unknown name, or options given with a function.
    """
    if isinstance(loss, str):
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose one of {sorted(LOSSES)} or pass a function "
                             "(y_true, y_pred, weights=None) -> scalar.")
        fn = LOSSES[loss]
        return functools.partial(fn, **options) if options else fn
    if callable(loss):
        if options:
            raise ValueError(f"loss options {sorted(options)} apply only to losses given by name.")
        return loss
    raise ValueError(f"`loss` must be a name ({sorted(LOSSES)}) or a function, got {loss!r}.")


def label_kind(loss: LossFn) -> str | None:
    """What labels ``loss`` expects, for the host-side checks, or None for an unknown function.

    ``"class_index"`` (integer ``(N,)``), ``"distribution"`` (one-hot ``(N, C)``), ``"binary"``
    (values in ``[0, 1]``) or ``"real"`` (any number, the predictions' shape).
    """
    while isinstance(loss, functools.partial):
        loss = loss.func
    try:
        return _LABEL_KINDS.get(loss)
    except TypeError:  # unhashable callable
        return None
