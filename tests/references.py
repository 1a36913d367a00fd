"""Independent float64 NumPy / SciPy reference implementations of the layers.

Each takes ``(params, state, x)`` as nested dicts / arrays of float64 and returns float64 output
in evaluation mode. They are written from the definitions, not from funcnet's code.
"""

from __future__ import annotations

import numpy as np
from scipy import special


def softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def gelu_exact(params, state, x):
    return 0.5 * x * (1 + special.erf(x / np.sqrt(2)))


def gelu_tanh(params, state, x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def dense(params, state, x):
    y = np.einsum("...i,ij->...j", x, params["w"])
    if "b" in params:
        y = y + params["b"]
    return y
