"""funcnet: JIT-compiled functional neural networks on JAX.

Layers are pairs of pure functions over plain dicts of arrays (see :mod:`funcnet.core`);
combinators compose them into models; training uses ``jax.grad``, ``jax.jit`` and optax.
"""

from importlib.metadata import version as _version

from funcnet import architecture, checkpoint, data, distributed, layers, losses, metrics, sharding, training
from funcnet.combinators import (
    FanInConcat,
    FanInSum,
    FanOut,
    Select,
    Sequential,
    branch,
    named,
    parallel,
    residual,
    serial,
    with_context,
)
from funcnet.core import (
    InputTypeError,
    Layer,
    LayerError,
    MissingInputError,
    MissingKeyError,
    ParamsError,
    ShapeError,
    as_spec,
    penalty,
    spec,
    spec_of,
)
from funcnet.generate import generate
from funcnet.layers import *
from funcnet.model import count_params, predict_fn, summary
from funcnet.tied import tied
from funcnet.training import (
    Callback,
    EarlyStopping,
    EpochHook,
    FitResult,
    KeepBest,
    NonFiniteError,
    TrainState,
    evaluate,
    fit,
    make_eval_step,
    make_train_step,
    plot_history,
    predict,
)

__version__ = _version("funcnet")

__all__ = [  # noqa: PLE0604 (layers.__all__ is a list of names)
    # the contract and its errors
    "Layer", "LayerError", "ShapeError", "InputTypeError", "ParamsError", "MissingKeyError", "MissingInputError",
    # specs: what init takes and gives
    "spec", "spec_of", "as_spec",
    # combinators
    "serial", "Sequential", "parallel", "branch", "residual", "named", "with_context", "FanOut", "FanInSum",
    "FanInConcat", "Select", "tied",
    # whole models
    "predict_fn", "summary", "count_params", "penalty", "generate",
    # training (more in funcnet.training, funcnet.losses, funcnet.metrics)
    "fit", "evaluate", "predict", "make_train_step", "make_eval_step", "TrainState", "FitResult",
    "NonFiniteError", "Callback", "EarlyStopping", "KeepBest", "EpochHook", "plot_history",
    # submodules
    "architecture", "checkpoint", "data", "layers", "losses", "metrics", "sharding", "training",
    "distributed",
    # layers
    *layers.__all__,
]
