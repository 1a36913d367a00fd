"""The jitted steps: one compilation, donation, optimizers, freezing, the non-finite guard, label checks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import funcnet as fn
from funcnet.checkpoint.tree import build, flatten_with_paths, leaf_paths
from funcnet.training import (
    OPTIMIZERS,
    GuardState,
    OptState,
    check_labels,
    freeze_labels,
    get_optimizer,
    init_opt_state,
    make_eval_step,
    make_optimizer,
    make_train_step,
    migrate_guard_layout,
    upgrade_opt_state,
)

LOSS = "sparse_categorical_crossentropy"


def mlp():
    return fn.serial(fn.Dense(16, activation="tanh"), fn.Dense(3))


def setup(model=None, features=6, seed=0):
    model = model or mlp()
    _, params, state = model.init(jax.random.key(seed), (None, features))
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(32, features)).astype(np.float32)
    y = rng.integers(0, 3, 32).astype(np.int32)
    return model, params, state, x, y


def copy(tree):
    return jax.tree.map(jnp.copy, tree)


def host(tree):
    return jax.tree.map(np.asarray, tree)


def test_step_equals_optax_by_hand_and_compiles_once():
    model, params, state, x, y = setup()
    step = make_train_step(model, LOSS, "adam", learning_rate=0.01, metrics=["accuracy"])
    opt_state = init_opt_state(params, "adam", learning_rate=0.01)

    tx = optax.adam(0.01)
    ref_params, ref_opt = copy(params), tx.init(params)

    def ref_loss(p, xb, yb):
        logits = model.apply(p, {}, xb, train=True)[0]
        return optax.losses.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    @jax.jit
    def ref_step(ref_params, ref_opt, xb, yb):
        loss, grads = jax.value_and_grad(ref_loss)(ref_params, xb, yb)
        updates, ref_opt = tx.update(grads, ref_opt, ref_params)
        return optax.apply_updates(ref_params, updates), ref_opt, loss

    p, s, o = copy(params), state, opt_state
    for i in range(3):
        batch = (x[i * 8:(i + 1) * 8], y[i * 8:(i + 1) * 8])
        p, s, o, logs = step(p, s, o, batch, jax.random.key(i))
        ref_params, ref_opt, loss = ref_step(ref_params, ref_opt, *batch)
        np.testing.assert_allclose(float(logs["loss"]), float(loss), rtol=1e-6)
        assert int(logs["skipped"]) == 0
    for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(ref_params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    assert set(logs) == {"loss", "accuracy", "skipped", "bad_run"}
    assert step._cache_size() == 1
    # A batch of another size compiles once more, and only once.
    for _ in range(2):
        p, s, o, _ = step(p, s, o, (x[:5], y[:5]), jax.random.key(9))
    assert step._cache_size() == 2


def test_buffers_are_donated():
    model, params, state, x, y = setup()
    step = make_train_step(model, LOSS, "sgd")
    p = copy(params)
    new_p, _, _, _ = step(p, state, init_opt_state(p, "sgd"), (x, y), None)
    assert all(leaf.is_deleted() for leaf in jax.tree.leaves(p))
    assert not any(leaf.is_deleted() for leaf in jax.tree.leaves(new_p))
    keep = make_train_step(model, LOSS, "sgd", donate=False)
    p = copy(params)
    keep(p, state, init_opt_state(p, "sgd"), (x, y), None)
    assert not any(leaf.is_deleted() for leaf in jax.tree.leaves(p))


def test_weighted_batch_matches_the_unpadded_batch():
    model, params, state, x, y = setup()
    step = make_train_step(model, LOSS, "sgd", donate=False)
    opt = init_opt_state(params, "sgd")
    padded = (np.concatenate([x[:20], x[:12]]), np.concatenate([y[:20], y[:12]]),
              np.r_[np.ones(20), np.zeros(12)].astype(np.float32))
    p_pad, _, _, logs_pad = step(params, state, opt, padded, None)
    p_ref, _, _, logs_ref = step(params, state, opt, (x[:20], y[:20]), None)
    np.testing.assert_allclose(float(logs_pad["loss"]), float(logs_ref["loss"]), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(p_pad), jax.tree.leaves(p_ref), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam", "adamw", "rmsprop"])
def test_optimizer_names_match_optax(name):
    reference = {"sgd": optax.sgd(0.05), "momentum": optax.sgd(0.05, momentum=0.9), "adam": optax.adam(0.05),
                 "adamw": optax.adamw(0.05), "rmsprop": optax.rmsprop(0.05)}[name]
    ours = get_optimizer(name, 0.05)
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32), "b": jnp.zeros(3)}
    a, b = ours.init(params), reference.init(params)
    for _ in range(2):
        grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
        ua, a = ours.update(grads, a, params)
        ub, b = reference.update(grads, b, params)
        for u, v in zip(jax.tree.leaves(ua), jax.tree.leaves(ub), strict=True):
            np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
    assert OPTIMIZERS[name] == {"adam": 1e-3, "adamw": 1e-3, "rmsprop": 1e-3}.get(name, 0.01)


def test_schedule_as_learning_rate():
    schedule = optax.linear_schedule(0.1, 0.0, 10)
    tx = get_optimizer("sgd", schedule)
    params = {"w": jnp.ones(2)}
    state = tx.init(params)
    updates, _ = tx.update({"w": jnp.ones(2)}, state, params)
    np.testing.assert_allclose(np.asarray(updates["w"]), [-0.1, -0.1], rtol=1e-6)


def test_extra_args_reach_the_optimizer():
    model, params, state, x, y = setup()
    # reduce_on_plateau reads the loss through optax's extra arguments (value=loss).
    tx = optax.chain(optax.sgd(0.1), optax.contrib.reduce_on_plateau(patience=0, accumulation_size=1))
    step = make_train_step(model, LOSS, tx, donate=False)
    opt = init_opt_state(params, tx)
    _, _, opt, logs = step(params, state, opt, (x, y), None)
    plateau = optax.tree.get(opt, "best_value")
    np.testing.assert_allclose(float(plateau), float(logs["loss"]), rtol=1e-6)


def test_optimizer_errors():
    with pytest.raises(ValueError, match=r"unknown optimizer 'adamax'; choose one of \['adam', 'adamw', 'momentum'"):
        get_optimizer("adamax")
    with pytest.raises(ValueError, match="`learning_rate` must be finite and non-negative, got -0.1"):
        get_optimizer("adam", -0.1)
    with pytest.raises(ValueError, match="`learning_rate` must be finite and non-negative, got nan"):
        get_optimizer("sgd", float("nan"))
    with pytest.raises(ValueError, match="must be a number or an optax schedule"):
        get_optimizer("sgd", "0.1")
    with pytest.raises(ValueError, match="schedule gives -1.0 at step 0"):
        get_optimizer("sgd", lambda step: -1.0)
    with pytest.raises(ValueError, match="apply only to optimizer names"):
        get_optimizer(optax.adam(1e-3), 0.1)
    with pytest.raises(ValueError, match=r"optimizer 'adam' \(optax.adam\) takes no option \['donate'\]; its "
                                         r"options are \['b1', 'b2', 'eps'"):
        init_opt_state({"w": jnp.ones(2)}, "adam", donate=True)


def test_loss_functions_must_give_a_scalar_and_take_weights_when_needed():
    model, params, state, x, y = setup()
    per_example = make_train_step(model, lambda t, p: fn.losses.mean_squared_error(t, p[:, 0]) * jnp.ones(32),
                                  "sgd")
    with pytest.raises(ValueError, match=r"must return a scalar .*got an array of shape \(32,\)"):
        per_example(copy(params), state, init_opt_state(params, "sgd"), (x, y.astype(np.float32)), None)
    no_weights = make_train_step(model, lambda t, p: fn.losses.sparse_categorical_crossentropy(t, p), "sgd")
    with pytest.raises(ValueError, match="takes no weights, but this batch has weights"):
        no_weights(copy(params), state, init_opt_state(params, "sgd"), (x, y, np.ones(32, np.float32)), None)


def test_opt_state_of_another_optimizer_is_a_clear_error():
    model, params, state, x, y = setup()
    step = make_train_step(model, LOSS, "adam", freeze="dense_0")
    with pytest.raises(ValueError, match=r"opt_state does not match the optimizer.*init_opt_state"):
        step(copy(params), state, init_opt_state(params, "adam"), (x, y), None)
    with pytest.raises(ValueError, match=r"opt_state has type tuple, but a train step takes a funcnet OptState.*"
                                         r"upgrade_opt_state"):
        step(copy(params), state, optax.adam(1e-3).init(params), (x, y), None)


# ----------------------------------------------------------------------------------------------
# Freezing


def test_freeze_patterns_label_paths():
    params = {"conv2d_0": {"w": 1, "b": 2}, "encoder": {"dense_0": {"w": 3}}, "dense_1": {"w": 4, "b": 5}}
    labels = freeze_labels(params, ["conv2d_*", "encoder/*"])
    assert labels == {"conv2d_0": {"w": "frozen", "b": "frozen"}, "encoder": {"dense_0": {"w": "frozen"}},
                      "dense_1": {"w": "trainable", "b": "trainable"}}
    assert freeze_labels(params, "*/b")["dense_1"] == {"w": "trainable", "b": "frozen"}
    with pytest.raises(ValueError, match=r"freeze pattern 'conv_\*' matches no parameter; the parameter paths are"):
        freeze_labels(params, "conv_*")


@pytest.mark.parametrize("optimizer", ["adamw", "momentum"])
def test_frozen_params_stay_bit_identical(optimizer):
    model, params, state, x, y = setup()
    params = jax.tree.map(lambda a: a + 0.1, params)  # non-zero biases, so weight decay would move them
    step = make_train_step(model, LOSS, optimizer, learning_rate=0.1, freeze="dense_0")
    opt = init_opt_state(params, optimizer, learning_rate=0.1, freeze="dense_0")
    before = host(params)
    p, s = copy(params), state
    for i in range(3):
        p, s, opt, _ = step(p, s, opt, (x, y), None)
    np.testing.assert_array_equal(np.asarray(p["dense_0"]["w"]), before["dense_0"]["w"])
    np.testing.assert_array_equal(np.asarray(p["dense_0"]["b"]), before["dense_0"]["b"])
    assert not np.allclose(np.asarray(p["dense_1"]["w"]), before["dense_1"]["w"])


# ----------------------------------------------------------------------------------------------
# The non-finite guard


def bn_model():
    return fn.serial(fn.Dense(8), fn.BatchNorm(momentum=0.5), fn.Relu(), fn.Dense(3))


@pytest.mark.parametrize("where", ["input", "loss"])
def test_nonfinite_step_is_skipped_and_counted(where):
    model, params, state, x, y = setup(bn_model())
    loss = LOSS
    if where == "loss":  # a NaN loss whose gradients are finite must be skipped too
        def loss(y_true, y_pred):  # a label -1 makes the loss NaN through a path without gradient
            base = fn.losses.sparse_categorical_crossentropy(jnp.maximum(y_true, 0), y_pred)
            return base + jax.lax.stop_gradient(jnp.where(jnp.any(y_true < 0), jnp.nan, 0.0))
    step = make_train_step(model, loss, "adam", learning_rate=0.01)
    opt = init_opt_state(params, "adam", learning_rate=0.01)
    p, s, opt, _ = step(copy(params), copy(state), opt, (x, y), None)
    before = host((p, s, opt))
    bad_x, bad_y = x.copy(), y.copy()
    if where == "input":
        bad_x[3, 2] = np.nan
    else:
        bad_y[3] = -1
    p, s, opt, logs = step(p, s, opt, (bad_x, bad_y), None)
    assert int(logs["skipped"]) == 1 and int(logs["bad_run"]) == 1
    for a, b in zip(jax.tree.leaves(host((p, s, opt.optimizer))),
                    jax.tree.leaves((before[0], before[1], before[2].optimizer)), strict=True):
        np.testing.assert_array_equal(a, b)  # params, BatchNorm statistics and Adam's moments untouched
    assert (int(opt.guard.bad_run), int(opt.guard.skipped)) == (1, 1)
    p, s, opt, logs = step(p, s, opt, (x, y), None)
    assert int(logs["skipped"]) == 0 and int(logs["bad_run"]) == 0
    assert (int(opt.guard.bad_run), int(opt.guard.skipped)) == (0, 1)
    assert all(np.all(np.isfinite(a)) for a in jax.tree.leaves(host((p, s))))


def test_guard_never_gives_up():
    model, params, state, x, y = setup()
    step = make_train_step(model, LOSS, "sgd")
    opt = init_opt_state(params, "sgd")
    p, s = copy(params), state
    bad = np.full_like(x, np.nan)
    for _ in range(5):
        p, s, opt, logs = step(p, s, opt, (bad, y), None)
    assert int(logs["bad_run"]) == 5
    np.testing.assert_array_equal(np.asarray(p["dense_0"]["w"]), np.asarray(params["dense_0"]["w"]))


# ----------------------------------------------------------------------------------------------
# Evaluation step and label checks


def test_eval_step():
    model, params, state, x, y = setup()
    eval_step = make_eval_step(model, LOSS, metrics=["accuracy"])
    logs = eval_step(params, state, (x, y))
    logits = np.asarray(model.apply(params, state, x)[0], np.float64)
    logp = logits - logits.max(1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
    np.testing.assert_allclose(float(logs["loss"]), -logp[np.arange(32), y].mean(), rtol=1e-5)
    np.testing.assert_allclose(float(logs["accuracy"]), (logits.argmax(1) == y).mean(), rtol=1e-6)
    with pytest.raises(ValueError, match="needs a loss or at least one metric"):
        make_eval_step(model)


@pytest.mark.parametrize("y,kind,error,message", [
    (np.zeros((10, 1), np.int32), "class_index", ValueError,
     (r"expects labels of shape \(10,\) \(one class index per example\) for model outputs of shape \(10, 3\), "
     r"got \(10, 1\)\. Flatten them with y\.reshape\(-1\)")),
    (np.zeros(10, np.float32), "class_index", TypeError,
     r"expects integer class indices, got labels of dtype float32; they are whole numbers: convert them"),
    (np.full(10, 0.5, np.float32), "class_index", TypeError, r"one-hot rows or probabilities need loss="),
    (np.array([0, 1, 2, 3] * 2 + [0, 0]), "class_index", ValueError,
     r"labels must be class indices in \[0, 3\) \(the model outputs 3 classes\), got min 0, max 3"),
    (np.array([-1] + [0] * 9), "class_index", ValueError, r"in \[0, 3\).*got min -1, max 0"),
    (np.zeros((10, 3), np.int32), "class_index", ValueError, "look like one-hot rows"),
    (np.zeros(10, np.int32), "distribution", ValueError, "look like class indices: use loss='sparse_"),
    (np.array([0, 1, 2] * 3 + [0]), "binary", ValueError, r"expects targets in \[0, 1\], got min 0, max 2"),
    (np.zeros((10, 2)), "real", ValueError, r"expects targets of the model's output shape \(10, 3\)"),
])
def test_label_checks(y, kind, error, message):
    with pytest.raises(error, match=message):
        check_labels(y, (None, 3) if kind != "binary" else (None, 1), kind, loss_name="the loss")


def test_label_checks_accept_good_labels():
    check_labels(np.array([0, 1, 2, 1]), (None, 3), "class_index")
    check_labels(np.eye(3)[[0, 1]], (None, 3), "distribution")
    check_labels(np.array([0.0, 1.0, 0.3]), (None, 1), "binary")
    check_labels(np.zeros((4, 3, 2)), (None, 3, 2), "real")


def test_make_optimizer_is_plain_optax():
    tx = make_optimizer("adam", freeze="dense_0")
    assert isinstance(tx, optax.GradientTransformation)
    assert vars(tx.update) == {} and vars(tx.init) == {}  # nothing attached
    params = {"dense_0": {"w": jnp.ones(2)}, "dense_1": {"w": jnp.ones(2)}}
    reference = optax.multi_transform({"trainable": optax.adam(1e-3), "frozen": optax.set_to_zero()},
                                      {"dense_0": {"w": "frozen"}, "dense_1": {"w": "trainable"}})
    assert jax.tree.structure(tx.init(params)) == jax.tree.structure(reference.init(params))


@pytest.mark.parametrize("make_tx", [lambda: optax.sgd(0.1), lambda: optax.chain(optax.clip(1.0), optax.adam(0.01)),
                                     lambda: optax.inject_hyperparams(optax.rmsprop)(learning_rate=0.01)])
def test_any_optax_optimizer_gets_the_guard(make_tx):
    model, params, state, x, y = setup()
    tx = make_tx()
    step = make_train_step(model, LOSS, tx)
    opt = init_opt_state(params, tx)
    assert isinstance(opt, OptState) and isinstance(opt.guard, GuardState)
    p, s, opt, _ = step(copy(params), state, opt, (x, y), None)
    before = host((p, opt.optimizer))
    bad = x.copy()
    bad[0, 0] = np.inf
    p, s, opt, logs = step(p, s, opt, (bad, y), None)
    assert int(logs["skipped"]) == 1 and (int(opt.guard.bad_run), int(opt.guard.skipped)) == (1, 1)
    for a, b in zip(jax.tree.leaves(host((p, opt.optimizer))), jax.tree.leaves(before), strict=True):
        np.testing.assert_array_equal(a, b)


def test_unguarded_step_has_the_same_layout_and_leaves_the_counters():
    model, params, state, x, y = setup()
    step = make_train_step(model, LOSS, "sgd", skip_nonfinite=False)
    opt = init_opt_state(params, "sgd")
    bad = np.full_like(x, np.nan)
    p, _, opt, logs = step(copy(params), state, opt, (bad, y), None)
    assert "skipped" not in logs and (int(opt.guard.bad_run), int(opt.guard.skipped)) == (0, 0)
    assert np.isnan(np.asarray(p["dense_0"]["w"])).all()  # no guard: the NaN update went through



# ----------------------------------------------------------------------------------------------
# The layout of older versions: ApplyIfFiniteState


def old_layout(params, freeze=None):
    """The opt_state funcnet's step used before OptState: optax.apply_if_finite around the optimizer."""
    tx = make_optimizer("adam", learning_rate=0.01, freeze=freeze)
    old = optax.apply_if_finite(tx, 2**31 - 1).init(params)
    return old._replace(notfinite_count=jnp.int32(2), total_notfinite=jnp.int32(5),
                        inner_state=jax.tree.map(lambda a: a + 1, old.inner_state))


def test_upgrade_opt_state_from_apply_if_finite_and_bare_states():
    model, params, state, x, y = setup()
    old = old_layout(params)
    new = upgrade_opt_state(old)
    assert isinstance(new, OptState) and (int(new.guard.bad_run), int(new.guard.skipped)) == (2, 5)
    assert new.optimizer is old.inner_state
    # It is what the step takes: it runs on, and a skipped step counts on from the old counters.
    step = make_train_step(model, LOSS, "adam", learning_rate=0.01)
    with pytest.raises(ValueError, match=r"opt_state has type ApplyIfFiniteState, .*upgrade_opt_state\(opt_state\)"):
        step(copy(params), state, old, (x, y), None)
    _, _, opt, _logs = step(copy(params), state, new, (np.full_like(x, np.nan), y), None)
    assert (int(opt.guard.bad_run), int(opt.guard.skipped)) == (3, 6)
    bare = optax.adam(0.01).init(params)
    assert upgrade_opt_state(bare).optimizer is bare and int(upgrade_opt_state(bare).guard.skipped) == 0
    assert upgrade_opt_state(new) is new


def test_migrate_guard_layout_rewrites_a_saved_manifest(tmp_path):
    from funcnet import checkpoint as ck
    from funcnet.checkpoint import format as fmt

    _model, params, _state, _x, _y = setup()
    old = old_layout(params, freeze="dense_0")
    ck.save(tmp_path / "c", {"params": params, "opt_state": old})
    manifest = fmt.read_manifest(tmp_path / "c")
    migrated = migrate_guard_layout(manifest)
    paths = sorted(e["path"] for e in migrated["arrays"])
    assert "['opt_state'].guard.bad_run" in paths and "['opt_state'].guard.skipped" in paths
    assert not any(p.startswith("['opt_state'].inner_state") or "last_finite" in p or "notfinite" in p for p in paths)
    assert any(p.startswith("['opt_state'].optimizer.inner_states") for p in paths)  # multi_transform
    assert sorted(leaf_paths(migrated["tree"])) == paths
    assert migrate_guard_layout(migrated) == migrated  # nothing left to migrate
    # The rewritten skeleton builds the tree upgrade_opt_state gives, from the same files.
    files = {e["path"]: e["file"] for e in manifest["arrays"]}
    new_files = {e["path"]: e["file"] for e in migrated["arrays"]}
    old_leaves = dict(flatten_with_paths({"params": params, "opt_state": old})[0])
    by_file = {files[p]: v for p, v in old_leaves.items()}
    rebuilt = build(migrated["tree"], {p: by_file[f] for p, f in new_files.items()})
    expected = upgrade_opt_state(old)
    assert type(rebuilt["opt_state"]) is OptState and type(rebuilt["opt_state"].guard) is GuardState
    assert jax.tree.structure(rebuilt["opt_state"]) == jax.tree.structure(expected)
    for a, b in zip(jax.tree.leaves(rebuilt["opt_state"]), jax.tree.leaves(expected), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
