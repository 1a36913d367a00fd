"""BatchNorm's zero-debiased running statistics (issue 11, item 10): right in eval mode after a
few steps, the plain moving average in long runs, checked against float64 NumPy references and on
real MNIST."""

from __future__ import annotations

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import funcnet as fn
from funcnet import checkpoint as ck
from funcnet.checkpoint import format as fmt
from funcnet.checkpoint import migrations
from funcnet.training import OptState
from tests.checkpoint_helpers import edit_manifest, optimizer, read_manifest, small_model
from tests.mnist_cache import reference

EPSILON = 1e-3


def _batches(steps: int, seed: int = 0) -> np.ndarray:
    """``steps`` batches of (16, 3) whose means and spreads differ per channel and drift per step."""
    rng = np.random.default_rng(seed)
    drift = np.linspace(0, 1, steps)[:, None, None]
    return rng.standard_normal((steps, 16, 3)) * np.array([0.5, 1.0, 2.0]) + np.array([-2.0, 0.0, 3.0]) + drift


def _train(layer: fn.Layer, batches: np.ndarray) -> tuple[dict, dict]:
    _, params, state = layer.init(jax.random.key(0), (None, 3))
    step = jax.jit(lambda s, x: layer.apply(params, s, x, train=True)[1])
    for batch in batches:
        state = step(state, jnp.asarray(batch, jnp.float32))
    return params, state


def _eval(layer: fn.Layer, params: dict, state: dict, x: np.ndarray) -> np.ndarray:
    return np.asarray(layer.apply(params, state, jnp.asarray(x, jnp.float32))[0])


@pytest.mark.parametrize("steps", [1, 3, 10])
def test_debiased_statistics_match_a_float64_reference(steps):
    """Eval mode uses the weighted mean of the batches' statistics, ``sum_i (1-m) m^(t-i) s_i / (1 - m^t)``
    (a closed form, not the layer's recursion), computed here in float64."""
    momentum = 0.9
    layer = fn.BatchNorm(momentum=momentum, epsilon=EPSILON)
    batches = _batches(steps)
    params, state = _train(layer, batches)

    weights = (1 - momentum) * momentum ** np.arange(steps - 1, -1, -1, dtype=np.float64)
    batch_means = batches.mean(axis=1)
    batch_vars = batches.var(axis=1)  # biased, as the layer uses
    mean = weights @ batch_means / weights.sum()
    var = weights @ batch_vars / weights.sum()
    np.testing.assert_allclose(state["debias"], 1 - momentum**steps, rtol=1e-6)
    np.testing.assert_allclose(state["mean"] / state["debias"], mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state["var"] / state["debias"], var, rtol=1e-5)
    x = _batches(1, seed=9)[0]
    np.testing.assert_allclose(_eval(layer, params, state, x), (x - mean) / np.sqrt(var + EPSILON), rtol=1e-4,
                               atol=1e-5)


def test_one_step_with_the_default_momentum_gives_that_batchs_statistics():
    """The undebiased average would be 99% its zero start here."""
    layer = fn.BatchNorm(epsilon=EPSILON)
    batch = _batches(1)
    params, state = _train(layer, batch)
    x = batch[0]
    expected = (x - x.mean(axis=0)) / np.sqrt(x.var(axis=0) + EPSILON)
    np.testing.assert_allclose(_eval(layer, params, state, x), expected, rtol=1e-3, atol=1e-4)


def test_before_any_step_eval_mode_uses_mean_zero_and_variance_one():
    layer = fn.BatchNorm(epsilon=EPSILON)
    _, params, state = layer.init(jax.random.key(0), (None, 3))
    assert {k: float(np.max(v)) for k, v in state.items()} == {"mean": 0.0, "var": 0.0, "debias": 0.0}
    x = _batches(1)[0]
    np.testing.assert_allclose(_eval(layer, params, state, x), x / np.sqrt(1 + EPSILON), rtol=1e-6)


def test_long_runs_keep_the_plain_moving_average():
    """After many steps the output equals that of the moving average started at mean 0 and
    variance 1 with no debiasing (funcnet's BatchNorm before format version 2), in float64."""
    momentum, steps = 0.9, 300
    layer = fn.BatchNorm(momentum=momentum, epsilon=EPSILON)
    batches = _batches(steps)
    params, state = _train(layer, batches)
    mean, var = np.zeros(3), np.ones(3)
    for batch in batches:
        mean = momentum * mean + (1 - momentum) * batch.mean(axis=0)
        var = momentum * var + (1 - momentum) * batch.var(axis=0)
    x = _batches(1, seed=9)[0]
    np.testing.assert_allclose(_eval(layer, params, state, x), (x - mean) / np.sqrt(var + EPSILON), rtol=1e-4,
                               atol=1e-5)


def _residual_cnn() -> fn.Layer:
    block = fn.residual(fn.Conv2D(16, 3, padding="SAME"), fn.BatchNorm(), fn.Relu(),
                        fn.Conv2D(16, 3, padding="SAME"), fn.BatchNorm())
    return fn.serial(fn.Conv2D(16, 3, strides=2, padding="SAME"), fn.BatchNorm(), fn.Relu(), block, fn.Relu(),
                     fn.MaxPool2D(2), fn.Flatten(), fn.Dense(10))


@pytest.mark.slow
def test_eval_mode_is_right_after_40_steps_on_mnist(mnist_dir):
    """A residual CNN with BatchNorm (default momentum 0.99) after 40 Adam steps of 64 MNIST images:
    eval-mode test accuracy within 2 points of train-mode (batch statistics) accuracy. Without
    debiasing the running statistics were still 67% their start: 0.65 against 0.82."""
    images, labels = reference(mnist_dir, "train")
    test_images, test_labels = reference(mnist_dir, "t10k")
    model = _residual_cnn()
    _, params, state = model.init(jax.random.key(0), (None, 28, 28, 1))
    optimizer = optax.adam(3e-3)
    opt_state = optimizer.init(params)

    def loss(p, s, x, y):
        logits, s = model.apply(p, s, x, train=True)
        return fn.losses.sparse_categorical_crossentropy(y, logits), s

    @jax.jit
    def step(p, s, o, x, y):
        (_, s), grads = jax.value_and_grad(loss, has_aux=True)(p, s, x, y)
        updates, o = optimizer.update(grads, o, p)
        return optax.apply_updates(p, updates), s, o

    rng = np.random.default_rng(0)
    for _ in range(40):
        index = rng.integers(0, len(images), 64)
        params, state, opt_state = step(params, state, opt_state, images[index].astype(np.float32) / 255,
                                        labels[index].astype(np.int32))

    predict = jax.jit(lambda x, train: model.apply(params, state, x, train=train)[0], static_argnames="train")
    x, y = test_images[:2000].astype(np.float32) / 255, test_labels[:2000]
    accuracy = {}
    for train in (True, False):
        logits = np.concatenate([np.asarray(predict(x[i:i + 500], train)) for i in range(0, len(x), 500)])
        accuracy[train] = float(np.mean(logits.argmax(axis=1) == y))
    assert accuracy[True] > 0.7, accuracy  # it learned something, so the comparison means something
    assert abs(accuracy[False] - accuracy[True]) <= 0.02, accuracy


# --------------------------------------------------------------------------------------------
# Format version 2: checkpoints of version 1 (BatchNorm state without 'debias') still restore.

#: Written by funcnet at commit e6dfa9a (format version 1): a TrainState of
#: tests.checkpoint_helpers.small_model with its architecture, BatchNorm state as below.
V1_CHECKPOINT = pathlib.Path(__file__).parent / "data" / "format_v1_batchnorm"
V1_MEAN, V1_VAR = np.array([0.5, -1.0, 2.0, 0.0]), np.array([0.25, 1.0, 4.0, 2.0])


def test_a_version_1_checkpoint_restores_with_debias_one():
    assert read_manifest(V1_CHECKPOINT)["format_version"] == 1
    restored = ck.restore(V1_CHECKPOINT)
    statistics = restored.tree.state["batchnorm_0"]
    assert sorted(statistics) == ["debias", "mean", "var"]
    assert statistics["debias"].dtype == jnp.float32 and statistics["debias"].shape == ()
    assert float(statistics["debias"]) == 1.0
    np.testing.assert_array_equal(statistics["mean"], V1_MEAN.astype(np.float32))
    np.testing.assert_array_equal(statistics["var"], V1_VAR.astype(np.float32))
    assert restored.manifest["format_version"] == ck.FORMAT_VERSION == 2
    assert restored.manifest["migrated_from"] == 1
    assert read_manifest(V1_CHECKPOINT)["format_version"] == 1  # the files are not changed


def test_a_version_1_checkpoint_behaves_as_it_did():
    """Eval mode with the migrated state uses the saved averages as they are, as version 1 did
    (float64 reference), and it fits today's model and optimizer templates."""
    restored = ck.restore(V1_CHECKPOINT, model=small_model(), optimizer=optimizer())
    model, tree = restored.model, restored.tree
    batchnorm = model.children[1]
    params, state = tree.params["batchnorm_0"], tree.state["batchnorm_0"]
    x = _batches(1)[0][:, :1].repeat(4, axis=1) + np.arange(4)
    expected = (x - V1_MEAN) / np.sqrt(V1_VAR + EPSILON) * np.asarray(params["scale"]) + np.asarray(params["bias"])
    np.testing.assert_allclose(batchnorm.apply(params, state, jnp.asarray(x, jnp.float32))[0], expected, rtol=1e-5,
                               atol=1e-5)
    _, new_state = batchnorm.apply(params, state, jnp.asarray(x, jnp.float32), train=True)
    assert float(new_state["debias"]) == 1.0  # training on keeps them undebiased
    # The old guard layout (optax's ApplyIfFiniteState) comes back as an OptState of the same arrays.
    assert isinstance(tree.opt_state, OptState)
    saved = {e["path"]: e for e in read_manifest(V1_CHECKPOINT)["arrays"]}
    assert int(tree.opt_state.guard.bad_run) == 0 and int(tree.opt_state.guard.skipped) == 0
    assert {".opt_state.notfinite_count", ".opt_state.total_notfinite"} <= set(saved)
    untemplated = ck.restore(V1_CHECKPOINT).tree.opt_state
    assert type(untemplated).__name__ == "OptState" and type(untemplated.guard).__name__ == "GuardState"


def test_a_migration_never_adds_debias_to_a_model_without_batchnorm(tmp_path):
    """A user's own {'mean', 'var'} dict stays as it was when the architecture has no BatchNorm."""
    tree = {"stats": {"mean": np.zeros(3, np.float32), "var": np.ones(3, np.float32)}}
    path = ck.save(tmp_path / "c", tree, model=fn.serial(fn.Dense(2)), input_shape=(None, 3))
    edit_manifest(path, lambda m: m.update(format_version=1))
    assert sorted(ck.restore(path).tree["stats"]) == ["mean", "var"]


def test_a_version_without_a_migration_step_is_refused_with_what_to_do(monkeypatch):
    monkeypatch.setattr(migrations, "MIGRATIONS", {})
    monkeypatch.setattr(fmt, "MIGRATIONS", {})
    with pytest.raises(ck.CheckpointVersionError, match=r"format_v1_batchnorm has format version 1, which this "
                                                          r"funcnet no longer migrates .*; restore it with an older "
                                                          r"funcnet and save it again"):
        ck.restore(V1_CHECKPOINT)


def test_a_migrated_entry_cannot_be_forged_on_disk(tmp_path):
    """Entries with an inline value come from migrations only: on disk the field is unknown."""
    path = ck.save(tmp_path / "c", {"w": np.zeros(3, np.float32)})
    edit_manifest(path, lambda m: m["arrays"][0].update(value=5.0))
    with pytest.raises(ck.CheckpointCorruptError, match=r"manifest.json: array entry 0 .*unknown fields \['value'\]"):
        ck.restore(path)


def test_the_migration_is_a_pure_function():
    manifest = read_manifest(V1_CHECKPOINT)
    before = json.dumps(manifest)
    migrated = migrations.MIGRATIONS[1](manifest)
    assert json.dumps(manifest) == before
    assert migrated["format_version"] == 2
    added = [e for e in migrated["arrays"] if "value" in e]
    assert added == [{"path": ".state['batchnorm_0']['debias']", "kind": "jax", "dtype": "float32", "shape": [],
                      "value": 1.0}]
