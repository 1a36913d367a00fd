"""The registry of layer cases: one or more per public layer, each with a float64 NumPy reference.

``test_layers.py`` runs every case through the same checks (shape agreement, reference forward
pass and gradients, jit / grad / vmap, dtypes, save and load); ``test_registry_covers_every_layer``
fails if a layer exported by ``funcnet.layers`` has no case here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

import funcnet as fn
from tests import references as ref


@dataclasses.dataclass(frozen=True)
class LayerCase:
    """One layer configuration to test.

    Attributes:
        id: the pytest id.
        make: builds the layer.
        input_shape: the input shape, batch axis included (batch >= 2).
        reference: ``(params, state, x) -> y`` in float64 NumPy, evaluation mode (``train=False``);
            params and state are nested dicts of float64 arrays as ``init`` made them.
        int_input: if set, inputs are integers in ``[0, int_input)`` (Embedding); no gradient wrt x.
        batch_coupled: the output of one example depends on others (BatchNorm in training);
            only relevant to ``train_reference``.
        train_reference: optional ``(params, state, x) -> (y, new_state)`` for ``train=True``.
        random_in_training: needs a key when ``train=True`` (Dropout); skipped by train checks.
    """

    id: str
    make: Callable[[], fn.Layer]
    input_shape: tuple
    reference: Callable[[dict, dict, np.ndarray], np.ndarray]
    int_input: int | None = None
    train_reference: Callable | None = None
    random_in_training: bool = False

    @property
    def input_spec(self):
        """The spec ``init`` takes: ``input_shape`` with the batch axis None, int32 ids or float32."""
        return fn.spec(self.input_shape, "int32" if self.int_input is not None else "float32")


BASIC = [
    LayerCase("dense", lambda: fn.Dense(5), (3, 4), ref.dense),
    LayerCase("dense_no_bias_relu", lambda: fn.Dense(3, activation="relu", use_bias=False), (2, 6),
              lambda p, s, x: np.maximum(ref.dense(p, s, x), 0)),
    LayerCase("dense_rank3", lambda: fn.Dense(4, rank=3), (2, 5, 3), ref.dense),
    LayerCase("flatten", lambda: fn.Flatten(), (2, 3, 4, 2), lambda p, s, x: x.reshape(x.shape[0], -1)),
    LayerCase("reshape", lambda: fn.Reshape((4, -1)), (2, 3, 4, 2), lambda p, s, x: x.reshape(x.shape[0], 4, 6)),
    LayerCase("identity", lambda: fn.Identity(), (2, 3), lambda p, s, x: x),
    LayerCase("dropout", lambda: fn.Dropout(0.3), (4, 5), lambda p, s, x: x, random_in_training=True),
    LayerCase("relu", lambda: fn.Relu(), (3, 7), lambda p, s, x: np.maximum(x, 0)),
    LayerCase("leaky_relu", lambda: fn.LeakyRelu(0.2), (3, 7), lambda p, s, x: np.where(x > 0, x, 0.2 * x)),
    LayerCase("elu", lambda: fn.Elu(0.5), (3, 7), lambda p, s, x: np.where(x > 0, x, 0.5 * np.expm1(x))),
    LayerCase("gelu_exact", lambda: fn.Gelu(approximate=False), (3, 7), ref.gelu_exact),
    LayerCase("gelu_tanh", lambda: fn.Gelu(), (3, 7), ref.gelu_tanh),
    LayerCase("silu", lambda: fn.Silu(), (3, 7), lambda p, s, x: x / (1 + np.exp(-x))),
    LayerCase("sigmoid", lambda: fn.Sigmoid(), (3, 7), lambda p, s, x: 1 / (1 + np.exp(-x))),
    LayerCase("tanh", lambda: fn.Tanh(), (3, 7), lambda p, s, x: np.tanh(x)),
    LayerCase("softmax", lambda: fn.Softmax(), (3, 7), lambda p, s, x: ref.softmax(x, -1)),
    LayerCase("softmax_axis1", lambda: fn.Softmax(axis=1), (2, 4, 3), lambda p, s, x: ref.softmax(x, 1)),
    LayerCase("log_softmax", lambda: fn.LogSoftmax(), (3, 7), lambda p, s, x: np.log(ref.softmax(x, -1))),
]

from tests.cases_attention import ATTENTION
from tests.cases_recurrent import RECURRENT
from tests.cases_spatial import SPATIAL
from tests.cases_transformer import TRANSFORMER

#: Every case; other modules' cases are appended here as the catalogue grows.
CASES: list[LayerCase] = [*BASIC, *SPATIAL, *RECURRENT, *ATTENTION, *TRANSFORMER]
