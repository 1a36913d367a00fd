"""The public API: an explicit snapshot, a docstring for every public name, small modules."""

from __future__ import annotations

import importlib
import inspect
import pathlib

import funcnet as fn

PUBLIC = sorted("""
Layer LayerError ShapeError InputTypeError ParamsError MissingKeyError MissingInputError
spec spec_of as_spec
serial Sequential parallel branch residual named with_context FanOut FanInSum FanInConcat Select tied
predict_fn summary count_params penalty generate
fit evaluate predict make_train_step make_eval_step TrainState FitResult NonFiniteError
Callback EarlyStopping KeepBest EpochHook plot_history
architecture checkpoint data layers losses metrics sharding training
distributed
Dense Dropout Flatten Reshape Identity
Relu LeakyRelu Elu Gelu Silu Sigmoid Tanh Softmax LogSoftmax ACTIVATIONS
relu leaky_relu elu gelu silu sigmoid tanh softmax log_softmax
Conv1D Conv2D Conv3D ConvTranspose1D ConvTranspose2D ConvTranspose3D
MaxPool1D MaxPool2D MaxPool3D AvgPool1D AvgPool2D AvgPool3D GlobalAvgPool GlobalMaxPool
BatchNorm LayerNorm GroupNorm Embedding set_lowering
RNN SimpleRNN GRU LSTM Bidirectional SimpleRNNCell GRUCell LSTMCell
RMSNorm MultiHeadAttention PositionalEmbedding SinusoidalEncoding TransformerEncoderBlock TransformerDecoderBlock
""".split())  # noqa: SIM905 (one line per group reads better than a list)

MODULES = ["funcnet", "funcnet.layers", "funcnet.losses", "funcnet.metrics", "funcnet.training", "funcnet.data",
           "funcnet.checkpoint", "funcnet.architecture", "funcnet.sharding",
           "funcnet.distributed"]


def test_top_level_api_is_the_snapshot():
    assert sorted(fn.__all__) == PUBLIC, "update the snapshot deliberately when the public API changes"
    assert len(set(fn.__all__)) == len(fn.__all__)
    for name in fn.__all__:
        assert hasattr(fn, name), name


def test_every_public_function_and_class_has_a_docstring():
    undocumented = []
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        assert module.__doc__, f"{module_name} has no module docstring"
        for name in module.__all__:
            obj = getattr(module, name)
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and not (obj.__doc__ or "").strip():
                undocumented.append(f"{module_name}.{name}")
    assert not undocumented, f"public names without a docstring: {undocumented}"


def test_modules_stay_small():
    root = pathlib.Path(fn.__file__).parent
    sizes = {str(p.relative_to(root)): len(p.read_text().splitlines()) for p in root.rglob("*.py")}
    too_big = {path: lines for path, lines in sizes.items() if lines > 400}
    assert not too_big, f"split these modules (over 400 lines): {too_big}"
