"""How a layer's computation is written for XLA: the reference lowering, or a faster one.

Some layers have two lowerings with the same results:

* ``"reference"``: the direct XLA operation, ``lax.conv_general_dilated`` for convolutions and
  ``lax.reduce_window`` for pooling.
* ``"fast"``: formulations that XLA's CPU backend runs several times faster (measured in
  ``docs/benchmarks.md``): pooling as a reduction over a reshaped view of non-overlapping windows
  (:mod:`funcnet.layers._windows`); convolution, with both its gradients, as matrix products with
  the input's patches (its values as sums of scaled slices for inputs of at most 4 channels),
  depthwise convolution as a sum of scaled slices, other grouped convolutions group by group, and
  transposed convolution as a matrix product followed by a scatter-add
  (:mod:`funcnet.layers._patches`).
* ``"auto"`` (the default): ``"fast"`` when :func:`jax.default_backend` is ``"cpu"`` at trace
  time, else ``"reference"`` (on accelerators the direct operations map onto tuned kernels).

"Same results" means: max pooling gives bitwise the same values and reverse-mode gradients (the
gradient of a window goes to its first maximal element in row-major window order, as
``reduce_window``'s gradient does); average pooling and convolutions add the same terms in
another order, so they agree to float rounding (a few units in the last place). A layer falls back
to the reference lowering where the fast one does not apply (overlapping pooling windows).

The lowering is an execution choice, not part of the architecture: it is not stored in a layer's
``config``, and nothing here sets process-wide XLA flags.
"""

from __future__ import annotations

import jax

#: The values of a layer's ``lowering`` argument.
LOWERINGS = ("auto", "reference", "fast")


def check_lowering(lowering: object, kind: str) -> str:
    """Returns ``lowering`` if it is one of :data:`LOWERINGS`; raises ``ValueError`` otherwise."""
    if not isinstance(lowering, str) or lowering not in LOWERINGS:
        raise ValueError(f"{kind}: `lowering` must be one of {list(LOWERINGS)}, got {lowering!r}.")
    return lowering


def use_fast(lowering: str) -> bool:
    """Whether to use the fast lowering; for ``"auto"``, decided by the backend at trace time."""
    if lowering == "auto":
        return jax.default_backend() == "cpu"
    return lowering == "fast"
