"""How a layer's computation is written for XLA: the reference lowering, or a faster one.

Convolution, pooling and attention layers have two lowerings with the same results:

* ``"reference"``: the direct XLA operation, ``lax.conv_general_dilated`` for convolutions and
  ``lax.reduce_window`` for pooling, ``jax.nn.dot_product_attention`` for attention.
* ``"fast"``: formulations that XLA's CPU backend runs faster (measured in
  ``docs/benchmarks.md``): pooling as a reduction over a reshaped view of non-overlapping windows
  (:mod:`funcnet.layers._windows`); convolution, with both its gradients, as matrix products with
  the input's patches (its values as sums of scaled slices for inputs of at most 4 channels),
  depthwise convolution as a sum of scaled slices, other grouped convolutions group by group, and
  transposed convolution as a matrix product followed by a scatter-add
  (:mod:`funcnet.layers._patches`); attention as its einsums and softmax written out, the queries
  scaled before the product (:mod:`funcnet.layers._attention_ops`).
* ``"auto"`` (the default): ``"fast"`` where the computation is lowered for the CPU, else
  ``"reference"`` (on accelerators the direct operations map onto tuned kernels). Both are traced
  and :func:`jax.lax.platform_dependent` keeps the one for the platform that ``jax.jit`` or
  ``jax.export`` lowers for, so a model placed on a non-default device, or exported for another
  platform, gets that platform's lowering. (Tracing both costs compile time: measured in
  ``docs/benchmarks.md``.)

"Same results" means: max pooling gives bitwise the same values and reverse-mode gradients (the
gradient of a window goes to its first maximal element in row-major window order, as
``reduce_window``'s gradient does); average pooling and convolutions add the same terms in
another order, so they agree to float rounding (a few units in the last place), and so does
attention (the queries are scaled before the product, not the logits after). A layer falls back
to the reference lowering where the fast one does not apply (overlapping pooling windows).

The lowering is an execution choice, not part of the architecture: it is not in any layer's
``config``, and it is chosen in one place for every layer, :func:`set_lowering`.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

import jax

#: The lowering modes :func:`set_lowering` takes.
LOWERINGS = ("auto", "reference", "fast")

# Part of jax.jit's cache key: a function traced under one mode is traced again under another.
_MODE = jax.make_user_context("auto")


class LoweringScope:
    """What :func:`set_lowering` returns: as a context manager, restores the previous mode on exit."""

    def __init__(self, previous: str) -> None:
        self.previous = previous

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        _MODE.set_global(self.previous)


def set_lowering(mode: str) -> LoweringScope:
    """Chooses the lowering of every convolution, pooling and attention layer traced from now on.

    The one way to override ``"auto"``. It takes effect at once, for the whole process;
    ``with set_lowering(mode):`` limits it to the block. Compiled functions are not reused
    across modes: a function traced under one mode is traced and compiled again under another.

    Args:
        mode: ``"auto"`` (the default: ``"fast"`` for the CPU, ``"reference"`` elsewhere,
            decided for the platform the computation is lowered for), ``"fast"`` or
            ``"reference"``; see :mod:`funcnet.layers._lowering` for what each means.

    Returns:
        A context manager that restores the previous mode when its block ends.

    Raises:
        ValueError: if ``mode`` is not one of :data:`LOWERINGS`.

    Example:
        >>> import funcnet as fn
        >>> with fn.layers.set_lowering("reference"):
        ...     pass  # fit, evaluate or jit here: convolutions use lax.conv_general_dilated
    """
    if not isinstance(mode, str) or mode not in LOWERINGS:
        raise ValueError(f"set_lowering: `mode` must be one of {list(LOWERINGS)}, got {mode!r}.")
    previous = _MODE.value
    _MODE.set_global(mode)
    return LoweringScope(previous)


def lowering_mode() -> str:
    """The mode :func:`set_lowering` chose (``"auto"`` unless it was called)."""
    return _MODE.value


def by_platform(fast: Callable[..., Any], reference: Callable[..., Any], *args: Any) -> Any:
    """``fast(*args)`` or ``reference(*args)``, as the current mode chooses; under ``"auto"``,
    the one for the platform the computation is lowered for (``fast`` for the CPU).

    A jitted caller need not take the mode as a static argument: it is in jit's cache key.
    """
    mode = lowering_mode()
    if mode == "auto":
        return jax.lax.platform_dependent(*args, cpu=fast, default=reference)
    return (fast if mode == "fast" else reference)(*args)
