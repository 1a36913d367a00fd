"""A model described as JSON and rebuilt with no user code has the same params and outputs."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet as fn
from funcnet import architecture as arch
from funcnet.core import Layer
from tests.layer_cases import CASES


def round_trip(model: Layer, input_shape) -> tuple[Layer, tuple]:
    text = arch.to_json(model, input_shape)
    document = json.loads(text)  # plain JSON: no Python objects survive
    rebuilt = arch.rebuild(document)
    return rebuilt, arch.input_spec(document)


def abstract_init(model: Layer, input_shape):
    """``model.init``'s output shape and params/state shapes, computing nothing."""
    box = {}

    def run(key):
        box["shape"], params, state = model.init(key, input_shape)
        return params, state

    params, state = jax.eval_shape(run, jax.random.key(0))
    return box["shape"], params, state


def assert_same_model(model: Layer, rebuilt: Layer, input_shape, x, *, train_key=None, jit=True):
    out_a, params_a, state_a = abstract_init(model, input_shape)
    out_b, params_b, state_b = abstract_init(rebuilt, input_shape)
    assert out_a == out_b
    # Identical trees: same structure (names), shapes and dtypes.
    assert jax.tree_util.tree_structure(params_a) == jax.tree_util.tree_structure(params_b)
    assert jax.tree_util.tree_structure(state_a) == jax.tree_util.tree_structure(state_b)
    assert jax.tree_util.tree_leaves((params_a, state_a)) == jax.tree_util.tree_leaves((params_b, state_b))
    rng = np.random.default_rng(0)
    params_a, state_a = jax.tree_util.tree_map(
        lambda s: jnp.asarray(np.abs(rng.standard_normal(s.shape)) + 0.5, s.dtype), (params_a, state_a))
    # The same params through both: identical outputs and new state, in eval and in training.
    for train in (False, True):
        key = train_key if train else None
        if train and train_key is None:
            continue
        apply_a, apply_b = model.apply, rebuilt.apply
        if jit:
            apply_a, apply_b = (jax.jit(f, static_argnames="train") for f in (apply_a, apply_b))
        y_a, s_a = apply_a(params_a, state_a, x, key=key, train=train)
        y_b, s_b = apply_b(params_a, state_a, x, key=key, train=train)
        for a, b in zip(jax.tree_util.tree_leaves((y_a, s_a)), jax.tree_util.tree_leaves((y_b, s_b)), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def varied_model() -> Layer:
    block = fn.serial(fn.Dense(6, activation="tanh"), fn.Dropout(0.25), fn.Dense(6), name="block")
    return fn.serial(
        fn.Flatten(),
        fn.Dense(6, activation="relu"),
        fn.residual(fn.Dense(6, activation="gelu", use_bias=False), fn.LeakyRelu(0.1)),
        fn.residual(fn.Dense(4), fn.Elu(0.5), shortcut=fn.Dense(4, use_bias=False)),
        fn.branch(fn.Dense(3, activation="sigmoid"), fn.named("right", fn.serial(fn.Dense(2), fn.Silu())),
                  fn.Identity()),
        fn.FanInConcat(),
        fn.FanOut(2),
        fn.parallel(fn.Dense(5), fn.Dense(5, activation="linear")),
        fn.FanInSum(),
        fn.Reshape((5, 1)),
        fn.Flatten(),
        block,
        fn.Gelu(approximate=False),
        fn.Dense(3, name="head"),
        fn.LogSoftmax(),
        fn.FanOut(2),
        fn.Select(-1),
    )


def test_varied_model_round_trips_through_json():
    model = varied_model()
    rebuilt, input_spec = round_trip(model, (None, 2, 4))
    assert input_spec == fn.spec((None, 2, 4))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((5, 2, 4)), jnp.float32)
    assert_same_model(model, rebuilt, (None, 2, 4), x, train_key=jax.random.key(7))
    assert arch.describe(rebuilt) == arch.describe(model)


def test_described_kinds_and_names_are_kept():
    description = arch.describe(varied_model())
    kinds = [child["kind"] for child in description["children"]]
    assert kinds[:6] == ["Flatten", "Dense", "Residual", "Residual", "Branch", "FanInConcat"]
    residual_with_shortcut = description["children"][3]
    assert residual_with_shortcut["config"] == {"shortcut": True}
    assert residual_with_shortcut["children"][-1]["name"] == "shortcut"
    assert description["children"][11]["name"] == "block"
    assert description["children"][1]["config"]["activation"] == "relu"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_every_registered_layer_round_trips(case):
    """Every layer in the test registry (new layers join automatically) rebuilds to the same layer."""
    layer = case.make()
    model = fn.serial(layer, name="wrapper")
    rebuilt, recorded = round_trip(model, case.input_spec)
    assert recorded == case.input_spec  # dtype and all
    rng = np.random.default_rng(0)
    if case.int_input is not None:
        x = jnp.asarray(rng.integers(0, case.int_input, size=case.input_shape), jnp.int32)
    else:
        x = jnp.asarray(rng.standard_normal(case.input_shape), jnp.float32)
    # Eagerly (small layers: cheaper than compiling); in training mode too where it differs.
    trains_differently = case.random_in_training or case.train_reference is not None
    assert_same_model(model, rebuilt, case.input_spec, x, train_key=jax.random.key(1) if trains_differently else None,
                      jit=False)


def test_every_catalogue_kind_is_in_the_registry():
    from funcnet.layers import LAYERS

    kinds = arch.registry()
    assert set(LAYERS) <= set(kinds)
    assert {"Serial", "Parallel", "Branch", "Residual", "FanOut", "FanInSum", "FanInConcat", "Select"} <= set(kinds)


def Custom(name=None):
    def init(key, spec, *, context=None):
        return spec, {}, {}

    def apply(params, state, x, *, key=None, train=False, context=None):
        return x * 2, state

    return Layer(init, apply, "Custom", {}, (), name)


def test_custom_layer_is_described_but_not_rebuilt():
    model = fn.serial(fn.Dense(3), fn.named("mine", Custom()))
    text = arch.to_json(model)  # describing never fails
    with pytest.raises(arch.ArchitectureError,
                       match=r"'model/mine' \(Custom\): 'Custom' is not one of funcnet's layers.*pass the model "
                             r"explicitly"):
        arch.from_json(text)


def test_function_activation_is_described_but_not_rebuilt():
    model = fn.serial(fn.Dense(3), fn.Dense(2, activation=lambda x: x * 3))
    description = arch.describe(model)
    with pytest.raises(arch.ArchitectureError,
                       match=r"'model/dense_1' \(Dense\): its config holds a function.*pass the model explicitly"):
        arch.rebuild(description)


def test_non_json_config_is_marked_and_refused():
    layer = Layer(lambda k, s: (s, {}, {}), lambda p, s, x, **kw: (x, s), "Dense", {"units": 3, "w_init": object()})
    description = arch.describe(fn.serial(layer))
    json.dumps(description)
    assert arch.NOT_JSON in description["children"][0]["config"]["w_init"]
    with pytest.raises(arch.ArchitectureError, match=r"'model/dense_0' \(Dense\): its config holds a object"):
        arch.rebuild(description)


@pytest.mark.parametrize(("document", "message"), [
    ({"version": 99, "model": {"kind": "Serial"}}, r"version 99; this funcnet reads versions up to 1"),
    ({"kind": 3}, r"malformed architecture description at 'model'"),
    ({"kind": "Serial", "children": "x"}, r"'children' a list"),
    ({"kind": "Dense", "config": {"units": -2}}, r"'model' \(Dense\) from config .*`units` must be a positive"),
    ({"kind": "Dense", "config": {"units": 2, "bogus": 1}},
     r"config keys \['bogus'\] are not among those Dense records"),
    ({"kind": "Residual", "config": {"shortcut": "yes"}}, r"'shortcut' must be true or false"),
    ({"kind": "__import__", "config": {"name": "os"}}, r"'__import__' is not one of funcnet's layers"),
])
def test_malformed_descriptions_are_clear_errors(document, message):
    with pytest.raises(arch.ArchitectureError, match=message):
        arch.rebuild(document)


def test_invalid_json_is_a_clear_error():
    with pytest.raises(arch.ArchitectureError, match="not valid JSON"):
        arch.from_json('{"kind": "Dense", ')


def test_a_users_function_named_like_a_builtin_activation_is_not_rebuilt_as_the_builtin():
    def relu(x):  # the user's own, not jax.nn.relu
        return 2 * x

    described = arch.describe(fn.serial(fn.Dense(3, activation=relu), fn.Dense(2, activation=jax.nn.relu)))
    assert described["children"][1]["config"]["activation"] == "relu"
    with pytest.raises(arch.ArchitectureError, match=r"'model/dense_0' \(Dense\): its config holds a function"):
        arch.rebuild(described)
