"""fit / evaluate / predict: training works, equals a hand-written loop, compiles once, reports clearly."""

from __future__ import annotations

import logging
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet as fn
from funcnet.training import (
    Callback,
    EarlyStopping,
    KeepBest,
    NonFiniteError,
    TrainState,
    evaluate,
    fit,
    init_opt_state,
    make_train_step,
    plot_history,
    predict,
)

LOSS = "sparse_categorical_crossentropy"


def teacher_data(n=64, features=5, classes=3, seed=0):
    """Labels from a random linear teacher: a task a small MLP can fit exactly."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype(np.float32)
    y = (x @ rng.normal(size=(features, classes))).argmax(1).astype(np.int32)
    return x, y


def mlp(dropout=0.0, classes=3):
    layers = [fn.Dense(32, activation="relu")]
    if dropout:
        layers.append(fn.Dropout(dropout))
    return fn.serial(*layers, fn.Dense(classes))


def init(model, features=5, seed=0):
    _, params, state = model.init(jax.random.key(seed), (None, features))
    return params, state


def leaves(tree):
    return [np.asarray(a) for a in jax.tree.leaves(tree)]


def test_fit_trains_to_near_zero_loss():
    x, y = teacher_data()
    model = mlp()
    params, state = init(model)
    result = fit(model, params, state, x, y, loss=LOSS, optimizer="adam", learning_rate=0.02, epochs=60,
                 batch_size=16, metrics=["accuracy"], verbose=0, key=jax.random.key(1))
    assert result.history["loss"][-1] < 0.05
    assert result.history["accuracy"][-1] == 1.0
    assert len(result.history["epoch"]) == 60 and result.history["skipped"] == [0] * 60
    logits = np.asarray(model.apply(result.params, result.state, x)[0])
    assert (logits.argmax(1) == y).all()


def hand_written_loop(model, params, state, x, y, *, key, epochs, batch_size, ragged, learning_rate):
    """The recipe documented in funcnet.training.batching, written with jax.random directly."""
    step = make_train_step(model, LOSS, "adam", learning_rate=learning_rate)
    opt_state = init_opt_state(params, "adam", learning_rate=learning_rate)
    params, state = jax.tree.map(jnp.copy, (params, state))
    n = len(x)
    data_key, step_root = jax.random.split(key)
    global_step = 0
    for epoch in range(epochs):
        order = np.asarray(jax.random.permutation(jax.random.fold_in(data_key, epoch), n))
        full = n // batch_size
        for b in range(full + (ragged == "pad" and n % batch_size != 0)):
            idx = order[b * batch_size:(b + 1) * batch_size]
            batch = (x[idx], y[idx])
            if ragged == "pad" and n % batch_size:
                pad = batch_size - len(idx)
                idx = np.concatenate([idx, order[:pad]])
                weights = np.r_[np.ones(batch_size - pad), np.zeros(pad)].astype(np.float32)
                batch = (x[idx], y[idx], weights)
            params, state, opt_state, _ = step(params, state, opt_state, batch,
                                               jax.random.fold_in(step_root, global_step))
            global_step += 1
    return params, state, opt_state


@pytest.mark.parametrize("mode,ragged", [("step", "drop"), ("step", "pad"), ("scan", "pad")])
def test_fit_equals_hand_written_loop(mode, ragged):
    x, y = teacher_data(n=50)
    model = mlp(dropout=0.3)  # dropout makes the result depend on the step keys too
    params, state = init(model)
    key = jax.random.key(7)
    result = fit(model, params, state, x, y, loss=LOSS, learning_rate=0.01, epochs=2, batch_size=16, key=key,
                 ragged=ragged, mode=mode, verbose=0)
    expected, _, _ = hand_written_loop(model, params, state, x, y, key=key, epochs=2, batch_size=16, ragged=ragged,
                                       learning_rate=0.01)
    for a, b in zip(leaves(result.params), leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-7)


def test_fit_leaves_the_callers_arrays_alone_and_host_mode_agrees():
    x, y = teacher_data(n=40)
    model = mlp()
    params, state = init(model)
    before = leaves(params)
    on_device = fit(model, params, state, x, y, loss=LOSS, epochs=2, batch_size=8, mode="step", verbose=0)
    on_host = fit(model, params, state, x, y, loss=LOSS, epochs=2, batch_size=8, data_on_device=False, verbose=0)
    for a, b in zip(before, leaves(params), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(leaves(on_device.params), leaves(on_host.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(on_device.history["loss"], on_host.history["loss"], rtol=1e-6)


def compilations(caplog, name):
    return sum(1 for r in caplog.records if re.search(rf"Compiling jit\({name}\)", r.getMessage()))


@pytest.mark.parametrize("mode,steps_per_call", [("step", None), ("scan", None), ("scan", 3)])
def test_training_compiles_once(caplog, mode, steps_per_call):
    x, y = teacher_data(n=100)  # 100 = 6 * 16 + 4: a ragged last batch, padded
    model = mlp()
    params, state = init(model)
    name = "train_step_on_device" if mode == "step" else "train_steps_scan"
    with caplog.at_level(logging.WARNING), jax.log_compiles(True):
        fit(model, params, state, x, y, loss=LOSS, epochs=3, batch_size=16, mode=mode, steps_per_call=steps_per_call,
            validation_data=(x[:30], y[:30]), verbose=0)
    # 7 batches an epoch, the last one padded: one step function, one whole-epoch loop, or loops of
    # 3 + 3 + 1 steps (the step count is traced); none recompiles in later epochs.
    assert compilations(caplog, name) == 1
    assert compilations(caplog, "evaluate_on_device") == 1




def test_models_trained_in_turn_do_not_compile_again(caplog):
    x, y = teacher_data(n=32)
    models = [mlp() for _ in range(8)]  # as a comparison of models, or a sweep, trains them
    variables = [init(m) for m in models]
    for round_ in range(2):
        with caplog.at_level(logging.WARNING), jax.log_compiles(True):
            for model, (params, state) in zip(models, variables, strict=True):
                fit(model, params, state, x, y, loss=LOSS, batch_size=16, verbose=0)
        if round_ == 0:
            assert compilations(caplog, "train_steps_scan") == 8
            caplog.clear()
    assert not [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage()]


def test_early_stopping_and_keep_best():
    x, y = teacher_data(n=60)
    model = mlp()
    params, state = init(model)
    kept = []

    class Record(Callback):
        def on_epoch_end(self, epoch, logs, train_state):
            kept.append(jax.device_get(train_state.params))

    # min_delta so large that only the first epoch counts as an improvement: two more epochs, then stop.
    stopper = EarlyStopping(monitor="loss", patience=2, min_delta=1e9)
    # mode="max" on the validation loss keeps the *worst* epoch: not the last one, so restoring is visible.
    keeper = KeepBest(monitor="val_loss", mode="max")
    result = fit(model, params, state, x, y, loss=LOSS, learning_rate=0.01, epochs=10, batch_size=8,
                 validation_split=0.25, callbacks=[Record(), stopper, keeper], verbose=0)
    assert result.history["epoch"] == [0, 1, 2] and stopper.stopped_epoch == 2
    worst = int(np.argmax(result.history["val_loss"]))
    assert keeper.best_epoch == worst and keeper.best == max(result.history["val_loss"])
    for a, b in zip(leaves(result.params), leaves(kept[worst]), strict=True):
        np.testing.assert_array_equal(a, b)


def test_early_stopping_rules():
    stopper = EarlyStopping(monitor="val_accuracy", patience=2)
    values = [0.5, 0.6, 0.6, 0.55, 0.7, 0.7, 0.7]
    stops = [stopper.on_epoch_end(i, {"val_accuracy": v}, None) for i, v in enumerate(values)]
    assert stops == [False, False, False, True, False, False, True]
    with pytest.raises(ValueError, match=r"monitors 'val_loss', which fit does not report; available: \['loss'\]"):
        EarlyStopping().on_epoch_end(0, {"loss": 1.0}, None)
    with pytest.raises(ValueError, match="`patience` must be a non-negative integer"):
        EarlyStopping(patience=-1)


def test_resume_continues_exactly():
    x, y = teacher_data(n=48)
    model = mlp(dropout=0.2)
    params, state = init(model)
    key = jax.random.key(3)
    saved = {}

    def save_after_two(epoch, logs, train_state):
        if train_state.epoch == 2:  # what a checkpoint callback would write (host copies)
            saved["state"] = jax.device_get(train_state)

    whole = fit(model, params, state, x, y, loss=LOSS, epochs=4, batch_size=16, key=key, verbose=0)
    fit(model, params, state, x, y, loss=LOSS, epochs=2, batch_size=16, key=key, callbacks=[save_after_two],
        verbose=0)
    restored = saved["state"]
    assert isinstance(restored, TrainState) and restored.step == 6 and restored.epoch == 2
    resumed = fit(model, None, None, x, y, loss=LOSS, epochs=4, batch_size=16, resume=restored, verbose=0)
    assert resumed.history["epoch"] == [2, 3]
    for a, b in zip(leaves((resumed.params, resumed.opt_state)), leaves((whole.params, whole.opt_state)),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(resumed.history["loss"], whole.history["loss"][2:])


def test_nan_batches_are_skipped_and_a_run_of_them_stops_fit():
    x, y = teacher_data(n=64)
    model = mlp()
    params, state = init(model)
    x_one_bad = x.copy()
    x_one_bad[5, 0] = np.nan
    result = fit(model, params, state, x_one_bad, y, loss=LOSS, epochs=2, batch_size=16, verbose=0)
    assert result.history["skipped"] == [1, 1]
    assert all(np.isfinite(a).all() for a in leaves(result.params))

    x_bad = np.full_like(x, np.nan)
    # Checked after each compiled call (here: the epoch's scan), so the run is at least 3 long.
    with pytest.raises(NonFiniteError, match=r"[3-4] consecutive steps had a non-finite loss or gradient.*"
                                             r"max_bad_steps=3.*parameters are still finite") as error:
        fit(model, params, state, x_bad, y, loss=LOSS, epochs=5, batch_size=16, max_bad_steps=3, verbose=0)
    assert error.value.train_state.epoch == 0
    for a, b in zip(leaves(error.value.train_state.params), leaves(params), strict=True):
        np.testing.assert_array_equal(a, b)


def test_validation_matches_evaluate_and_predict():
    x, y = teacher_data(n=90)
    model = mlp()
    params, state = init(model)
    xv, yv = teacher_data(n=37, seed=5)
    result = fit(model, params, state, x, y, loss=LOSS, epochs=2, batch_size=16, metrics=["accuracy", "f1"],
                 validation_data=(xv, yv), verbose=0)
    scores = evaluate(model, result.params, result.state, xv, yv, loss=LOSS, metrics=["accuracy", "f1"],
                      batch_size=10)
    for name in ("loss", "accuracy", "f1"):
        np.testing.assert_allclose(result.history[f"val_{name}"][-1], scores[name], rtol=1e-5)
    on_host = evaluate(model, result.params, result.state, xv, yv, loss=LOSS, metrics=["accuracy", "f1"],
                       batch_size=10, data_on_device=False)
    assert on_host.keys() == scores.keys()
    for name in scores:
        np.testing.assert_allclose(on_host[name], scores[name], rtol=1e-6)
    logits = np.asarray(predict(model, result.params, result.state, xv, batch_size=10))
    expected = np.asarray(model.apply(result.params, result.state, xv)[0])
    assert logits.shape == (37, 3)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(predict(model, result.params, result.state, xv, batch_size=10,
                                                  data_on_device=False)), logits, rtol=1e-6)
    z = expected.astype(np.float64)
    logp = z - z.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    np.testing.assert_allclose(scores["loss"], -logp[np.arange(37), yv].mean(), rtol=1e-5)
    np.testing.assert_allclose(scores["accuracy"], (z.argmax(1) == yv).mean(), rtol=1e-6)


def test_learning_rate_schedule_is_logged():
    import optax

    x, y = teacher_data(n=32)
    model = mlp()
    params, state = init(model)
    schedule = optax.linear_schedule(0.1, 0.0, 8)
    result = fit(model, params, state, x, y, loss=LOSS, optimizer="sgd", learning_rate=schedule, epochs=3,
                 batch_size=8, verbose=0)
    np.testing.assert_allclose(result.history["learning_rate"], [0.05, 0.0, 0.0], atol=1e-7)


def test_fit_argument_and_label_errors():
    x, y = teacher_data(n=20)
    model = mlp()
    params, state = init(model)

    def call(**kw):
        args = {"loss": LOSS, "epochs": 1, "batch_size": 4, "verbose": 0}
        args.update(kw)
        data = (args.pop("x", x), args.pop("y", y))
        return fit(model, params, state, *data, **args)

    with pytest.raises(ValueError, match=r"expects labels of shape \(20,\).*got \(20, 1\)\. Flatten them"):
        call(y=y[:, None])
    with pytest.raises(TypeError, match="expects integer class indices, got labels of dtype float32"):
        call(y=y.astype(np.float32))
    with pytest.raises(ValueError, match=r"labels must be class indices in \[0, 3\).*got min 0, max 7"):
        call(y=np.r_[y[:-1], 7])
    with pytest.raises(ValueError, match="`x` has 20 examples but `y` has 19"):
        call(y=y[:19])
    with pytest.raises(ValueError, match=r"`x` is empty \(0 examples\)"):
        call(x=x[:0], y=y[:0])
    with pytest.raises(ValueError, match=r"\(validation data\) expects labels of shape"):
        call(validation_data=(x, y[:, None]))
    with pytest.raises(ValueError, match="`ragged` must be one of"):
        call(ragged="keep")
    with pytest.raises(ValueError, match="`mode` must be one of"):
        call(mode="fast")
    with pytest.raises(ValueError, match="ragged='drop' with batch_size=32 drops all 20 examples"):
        call(batch_size=32, ragged="drop")
    with pytest.raises(ValueError, match="pass either validation_data or validation_split"):
        call(validation_split=0.2, validation_data=(x, y))
    with pytest.raises(fn.ShapeError, match="Dense"):
        call(x=x[:, :4])


def test_progress_output_and_history_plot(tmp_path, capsys):
    x, y = teacher_data(n=32)
    model = mlp()
    params, state = init(model)
    result = fit(model, params, state, x, y, loss=LOSS, epochs=2, batch_size=8, metrics=["accuracy"],
                 validation_split=0.25, verbose=2)
    out = capsys.readouterr()
    lines = [line for line in out.out.splitlines() if line.startswith("Epoch")]
    assert len(lines) == 2 and "loss" in lines[0] and "val_accuracy" in lines[1] and "ex/s" in lines[1]
    fit(model, params, state, x, y, loss=LOSS, epochs=1, batch_size=8, verbose=1)
    assert "Epoch 1/1" in capsys.readouterr().err
    fit(model, params, state, x, y, loss=LOSS, epochs=1, batch_size=8, verbose=0)
    assert capsys.readouterr() == ("", "")
    path = plot_history(result.history, tmp_path / "history.png")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_history(result.history, tmp_path / "x.png", names=["f1"])


def test_plot_history_without_matplotlib_says_how_to_install(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'funcnet\[plot\]'"):
        plot_history({"epoch": [0], "loss": [1.0]}, tmp_path / "h.png")
