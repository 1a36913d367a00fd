"""Shared weights: one array in params, used in two places, with the gradient of both uses."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet as fn
from funcnet import architecture as arch
from funcnet import checkpoint
from tests.test_architecture import assert_same_model, round_trip

VOCAB, FEATURES, STEPS = 11, 4, 3
IDS = np.array([[1, 2, 3], [10, 0, 4]], np.int32)
IDS_SPEC = fn.spec((None, STEPS), "int32")  # token ids: Embedding takes integers
LM_TIES = {"dense_0/w": ("embedding_0/w", "transpose")}


def language_model(use_bias: bool = True) -> fn.Layer:
    """Embedding(vocab, d) -> Tanh -> Dense(vocab) per step; untied."""
    return fn.serial(fn.Embedding(VOCAB, FEATURES), fn.Tanh(), fn.Dense(VOCAB, use_bias=use_bias, rank=3))


def tied_language_model(use_bias: bool = True) -> fn.Layer:
    return fn.tied(language_model(use_bias), LM_TIES)


def untied_params(params):
    """The tied model's params as the untied model takes them: the projection is the table, transposed."""
    return {**params, "dense_0": {**params.get("dense_0", {}), "w": params["embedding_0"]["w"].T}}


@pytest.mark.parametrize("use_bias", [True, False])
def test_params_hold_the_shared_array_once_and_outputs_follow_the_formula(key, use_bias):
    model = tied_language_model(use_bias)
    out_shape, params, state = model.init(key, IDS_SPEC)
    assert out_shape == fn.spec((None, STEPS, VOCAB))
    expected_tree = {"embedding_0": {"w": (VOCAB, FEATURES)}, **({"dense_0": {"b": (VOCAB,)}} if use_bias else {})}
    assert jax.tree_util.tree_map(jnp.shape, params) == expected_tree  # no empty "dense_0" group without bias
    assert fn.count_params(params) == VOCAB * FEATURES + (VOCAB if use_bias else 0)
    # The untied model with the same key initialises the table identically: tied drops entries only.
    _, untied, _ = language_model(use_bias).init(key, IDS_SPEC)
    np.testing.assert_array_equal(params["embedding_0"]["w"], untied["embedding_0"]["w"])

    y, _ = model.apply(params, state, jnp.asarray(IDS))
    table = np.asarray(params["embedding_0"]["w"], np.float64)
    bias = np.asarray(params["dense_0"]["b"], np.float64) if use_bias else 0.0
    expected = np.tanh(table[IDS]) @ table.T + bias  # float64 NumPy: logits against the same table
    np.testing.assert_allclose(np.asarray(y, np.float64), expected, rtol=1e-5, atol=1e-6)


def lm_case(rng):
    """The language model: the projection is the embedding table, transposed."""
    return language_model(), LM_TIES, IDS_SPEC, jnp.asarray(IDS)


def three_dense_case(rng):
    """Three square Dense layers using one kernel: the second as it is, the third transposed."""
    model = fn.serial(fn.Dense(5), fn.Tanh(), fn.Dense(5), fn.Tanh(), fn.Dense(5))
    ties = {"dense_1/w": "dense_0/w", "dense_2/w": ("dense_0/w", "transpose")}
    return model, ties, (None, 5), jnp.asarray(rng.standard_normal((3, 5)))


# A transform and the map of a gradient back to its source: both are their own inverse.
TRANSFORM_FUNCTIONS = {"identity": lambda w: w, "transpose": jnp.transpose}


def path_get(tree, path):
    for part in path.split("/"):
        tree = tree[part]
    return tree


@pytest.mark.parametrize("make", [lm_case, three_dense_case], ids=["embedding-transposed", "dense-three-uses"])
def test_gradient_is_the_sum_of_the_gradients_of_all_uses(key, make):
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        untied_model, ties, input_shape, x = make(rng)
        model = fn.tied(untied_model, ties)
        _, params, state = model.init(key, input_shape)
        params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
        weights = jnp.asarray(rng.standard_normal(model.apply(params, state, x)[0].shape))

        def tied_loss(p):
            return jnp.sum(weights * jnp.sin(model.apply(p, state, x)[0]))

        def untied_loss(p):
            return jnp.sum(weights * jnp.sin(untied_model.apply(p, state, x)[0]))

        # The reference: the untied model given equal weights in every use, each use differentiated apart.
        full = params
        for destination, (source, transform) in model.config["ties"].items():
            group, leaf = destination.split("/")
            shared = TRANSFORM_FUNCTIONS[transform](path_get(params, source))
            full = {**full, group: {**full.get(group, {}), leaf: shared}}
        grads = jax.jit(jax.grad(tied_loss))(params)
        separate = jax.grad(untied_loss)(full)
    source = next(iter(model.config["ties"].values()))[0]
    expected = path_get(separate, source)
    for destination, (_, transform) in model.config["ties"].items():
        assert np.abs(path_get(separate, destination)).max() > 0.1  # every use contributes
        expected = expected + TRANSFORM_FUNCTIONS[transform](path_get(separate, destination))
    assert path_get(grads, source).dtype == jnp.float64
    np.testing.assert_allclose(path_get(grads, source), expected, rtol=1e-12, atol=1e-12)
    assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(params)  # no destination entries


def test_checkpoint_round_trip_keeps_one_array_and_the_outputs(key, tmp_path):
    model = tied_language_model()
    _, params, state = model.init(key, IDS_SPEC)
    path = checkpoint.save(tmp_path / "ckpt", {"params": params, "state": state}, model=model,
                           input_shape=IDS_SPEC)
    restored = checkpoint.restore(path)
    shapes = sorted(tuple(entry["shape"]) for entry in restored.manifest["arrays"])
    assert shapes == [(VOCAB,), (VOCAB, FEATURES)]  # the table once; no (FEATURES, VOCAB) copy
    rebuilt = restored.model  # from the recorded architecture, no user code
    assert rebuilt.kind == "Tied" and dict(rebuilt.config) == dict(model.config)
    y, _ = model.apply(params, state, jnp.asarray(IDS))
    y_restored, _ = rebuilt.apply(restored.tree["params"], restored.tree["state"], jnp.asarray(IDS))
    np.testing.assert_array_equal(np.asarray(y_restored), np.asarray(y))
    # Templates from the rebuilt model's init fit the checkpoint: the sharing survived the round trip.
    again = checkpoint.restore(path, model=rebuilt)
    assert jax.tree_util.tree_map(jnp.shape, again.tree["params"]) == jax.tree_util.tree_map(jnp.shape, params)


def test_architecture_json_rebuilds_the_sharing():
    model = fn.serial(fn.tied(language_model(), LM_TIES, name="lm"), fn.LogSoftmax())
    rebuilt, input_shape = round_trip(model, IDS_SPEC)
    description = arch.describe(rebuilt)
    assert description == arch.describe(model)
    assert description["children"][0]["config"] == {"ties": {"dense_0/w": ["embedding_0/w", "transpose"]}}
    _, params, _ = rebuilt.init(jax.random.key(0), input_shape)
    assert set(params["lm"]) == {"embedding_0", "dense_0"} and set(params["lm"]["dense_0"]) == {"b"}
    assert_same_model(model, rebuilt, input_shape, jnp.asarray(IDS), jit=False)


def test_identity_and_transpose_spellings_are_one_config():
    as_list = fn.tied(language_model(), {"dense_0/w": ["embedding_0/w", "transpose"]})  # as JSON gives it
    assert dict(as_list.config) == {"ties": {"dense_0/w": ("embedding_0/w", "transpose")}}
    identity = fn.tied(fn.serial(fn.Dense(5), fn.Dense(5)), {"dense_1/w": "dense_0/w"})
    assert dict(identity.config) == {"ties": {"dense_1/w": ("dense_0/w", "identity")}}


@pytest.mark.parametrize("ties, error, match", [
    ({"dense_0/q": ("embedding_0/w", "transpose")}, fn.ParamsError,
     r"tie destination 'dense_0/q' names no parameter: no entry 'q' in 'dense_0' \(entries: \['b', 'w'\]\)"),
    ({"dense_0/w": ("embed/w", "transpose")}, fn.ParamsError,
     (r"tie source 'embed/w' names no parameter: no entry 'embed' in the model's params "
     r"\(entries: \['dense_0', 'embedding_0'\]\)")),
    ({"dense_0": ("embedding_0/w", "transpose")}, fn.ParamsError,
     r"tie destination 'dense_0' names a group of parameters \(\['b', 'w'\]\), not one array"),
    ({"dense_0/w/x": ("embedding_0/w", "transpose")}, fn.ParamsError,
     r"tie destination 'dense_0/w/x' names no parameter: 'dense_0/w' is an array, not a group"),
    ({"dense_0/w": "embedding_0/w"}, fn.ShapeError,
     (r"tie 'dense_0/w' <- identity of 'embedding_0/w': the destination is \(4, 11\) float32, the source "
     r"gives \(11, 4\) float32.*Hint: the transform 'transpose' gives \(4, 11\)")),
    ({"dense_0/b": ("embedding_0/w", "transpose")}, fn.ShapeError,
     (r"tie 'dense_0/b' <- transpose of 'embedding_0/w': the destination is \(11,\) float32, the source gives "
     r"\(4, 11\) float32.*Hint: tie parameters of the same size")),
], ids=["unknown-destination", "unknown-source", "group", "past-an-array", "needs-transpose", "size"])
def test_init_rejects_ties_that_do_not_fit(key, ties, error, match):
    model = fn.serial(fn.tied(language_model(), ties))
    with pytest.raises(error, match=r"(?s)Layer 'tied_0' \(Tied, position 0 in its container\): " + match):
        model.init(key, IDS_SPEC)


@pytest.mark.parametrize("ties, error, match", [
    ({"dense_0/w": "dense_0/w"}, ValueError, r"tied: tie 'dense_0/w' is tied onto itself"),
    ({"dense_0/w": "embedding_0/w", "dense_1/w": "dense_0/w"}, ValueError,
     (r"tied: 'dense_0/w' is the destination of a tie and the source of the tie 'dense_1/w'; tie 'dense_1/w' to "
     r"'embedding_0/w' \(the original\) instead")),
    ({"dense_0/w": ("embedding_0/w", "flip")}, ValueError,
     r"tie 'dense_0/w' has transform 'flip'; choose one of \['identity', 'transpose'\]"),
    ({"dense_0/w": 3}, TypeError, r"tied: tie 'dense_0/w': 3 must map a path string to a source path"),
    ([("dense_0/w", "embedding_0/w")], TypeError, r"tied: `ties` must be a dict"),
], ids=["onto-itself", "destination-is-a-source", "transform", "not-a-path", "not-a-dict"])
def test_malformed_ties_are_refused_at_construction(ties, error, match):
    with pytest.raises(error, match=match):
        fn.tied(language_model(), ties)


def test_apply_refuses_untied_params(key):
    model = tied_language_model()
    _, untied, state = language_model().init(key, IDS_SPEC)
    with pytest.raises(fn.ParamsError, match=r"(?s)params hold 'dense_0/w', which this model makes from "
                       r"'embedding_0/w'.*Hint: pass params made by this tied model's init"):
        model.apply(untied, state, jnp.asarray(IDS))
    _, params, _ = model.init(key, IDS_SPEC)
    with pytest.raises(fn.ParamsError, match=r"params lack 'embedding_0/w', the source of the tie 'dense_0/w'"):
        model.apply({"dense_0": params["dense_0"]}, state, jnp.asarray(IDS))


def test_untied_params_give_the_same_outputs_as_the_untied_model(key):
    model = tied_language_model()
    _, params, state = model.init(key, IDS_SPEC)
    y_tied, _ = model.apply(params, state, jnp.asarray(IDS))
    y_untied, _ = language_model().apply(untied_params(params), state, jnp.asarray(IDS))
    np.testing.assert_array_equal(np.asarray(y_tied), np.asarray(y_untied))


def test_fit_trains_the_one_array_and_the_optimizer_state_holds_it_once(key):
    # Ids (N,) -> logits (N, vocab); the task (say the id back) suits an output tied to the input table.
    model = fn.tied(fn.serial(fn.Embedding(VOCAB, 8), fn.Tanh(), fn.Dense(VOCAB)), LM_TIES)
    _, params, state = model.init(key, fn.spec((None,), "int32"))
    x = np.arange(128, dtype=np.int32) % VOCAB
    result = fn.fit(model, params, state, x, x, loss="sparse_categorical_crossentropy", learning_rate=0.05,
                    epochs=10, batch_size=32, verbose=0, metrics="accuracy")
    shapes = jax.tree_util.tree_map(jnp.shape, params)
    assert jax.tree_util.tree_map(jnp.shape, result.params) == shapes
    # Adam keeps two moments of the table, and none of a transposed copy.
    moment_shapes = [leaf.shape for leaf in jax.tree_util.tree_leaves(result.opt_state)]
    assert moment_shapes.count((VOCAB, 8)) == 2 and (8, VOCAB) not in moment_shapes
    assert result.history["loss"][-1] < 0.5 * result.history["loss"][0]
    assert result.history["accuracy"][-1] == 1.0


def test_errors_inside_the_tied_model_name_the_params_path(key):
    model = fn.serial(fn.tied(language_model(), LM_TIES, name="lm"))
    _, params, state = model.init(key, IDS_SPEC)
    with pytest.raises(fn.InputTypeError, match=r"Layer 'lm/embedding_0' \(Embedding, position 0 in its container\): "
                       r"Embedding takes integer ids, got dtype float32"):
        model.apply(params, state, jnp.zeros((2, STEPS)))
    assert set(params["lm"]) == {"embedding_0", "dense_0"}  # the same path into params
