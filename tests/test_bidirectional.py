"""Bidirectional: merges, return_state, masks (the backward direction reads only the real steps),
the architecture JSON and checkpoints. The registry (tests/cases_recurrent.py) checks the forward
pass and gradients of two configurations against tests/references_recurrent.py."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import funcnet as fn
from funcnet import architecture as arch
from funcnet import checkpoint as ck
from funcnet.layers.recurrent import RNN_LAYERS
from tests import references_recurrent as ref
from tests.recurrent_helpers import as64, assert_matches_reference, random_params


@pytest.mark.parametrize(("merge", "inner", "kind"), [
    ("sum", fn.SimpleRNN(3, reverse=True), "simple"),
    ("mul", fn.GRU(2, return_sequences=True), "gru"),
    ("concat", fn.RNN(fn.LSTMCell(2)), "lstm"),
])
def test_merges_match_reference(merge, inner, kind):
    layer = fn.Bidirectional(inner, merge=merge)
    params, state = random_params(layer, (None, 4, 2))
    x = np.random.default_rng(1).standard_normal((2, 4, 2))
    options = {k: inner.config[k] for k in ("reverse", "return_sequences")}
    with jax.enable_x64(True):
        got = layer.apply(as64(params), state, x)[0]
    expected = ref.bidirectional(as64(params), {}, x, kind=kind, merge=merge, **options)
    np.testing.assert_allclose(got, expected, rtol=1e-9)


def test_no_merge_and_return_state_give_each_direction():
    layer = fn.Bidirectional(fn.LSTM(3, return_sequences=True, return_state=True), merge=None)
    params, state = random_params(layer, (None, 5, 2))
    x = np.random.default_rng(2).standard_normal((2, 5, 2))
    with jax.enable_x64(True):
        ((forward, backward), (forward_state, backward_state)), _ = layer.apply(as64(params), state, x)
    expected = [ref.rnn(as64(params)[d], {}, x, kind="lstm", return_sequences=True, return_state=True, reverse=r)
                for d, r in (("forward", False), ("backward", True))]
    for got, want in zip((forward, forward_state, backward, backward_state),
                         (expected[0][0], expected[0][1], expected[1][0], expected[1][1]), strict=True):
        jax.tree.map(lambda g, e: np.testing.assert_allclose(g, e, rtol=1e-9), got, want)
    out_spec = layer.init(jax.random.key(0), (None, 5, 2))[0]
    assert jax.tree.map(lambda s: s.shape[1:], out_spec) == (((5, 3), (5, 3)), (((3,), (3,)), ((3,), (3,))))


@pytest.mark.parametrize("inner", [fn.LSTM(3, return_sequences=True, return_state=True, mask="m"),
                                   fn.GRU(3, return_state=True, mask="m")], ids=["lstm_sequences", "gru_last"])
def test_masked_backward_direction_reads_only_the_real_steps(inner):
    layer = fn.with_context(fn.Bidirectional(inner), "m")
    alone = fn.Bidirectional(RNN_LAYERS[inner.kind](**{**inner.config, "mask": None}))
    x = np.random.default_rng(3).standard_normal((3, 6, 2)).astype(np.float32)
    valid = [slice(0, 4), slice(2, 6), slice(0, 6)]  # right-padded, left-padded, full
    mask = np.zeros((3, 6), bool)
    for i, v in enumerate(valid):
        mask[i, v] = True
    params, state = random_params(layer, fn.spec_of({"x": x, "m": mask}))
    (outputs, final), _ = layer.apply(params, state, {"x": x, "m": mask})
    for i, v in enumerate(valid):
        (expected_outputs, expected_final), _ = alone.apply(params, state, x[i:i + 1, v])
        if inner.config["return_sequences"]:
            np.testing.assert_allclose(outputs[i:i + 1, v], expected_outputs, rtol=1e-5, atol=1e-6)
            np.testing.assert_array_equal(outputs[i, ~mask[i]], 0.0)
        else:
            np.testing.assert_allclose(outputs[i:i + 1], expected_outputs, rtol=1e-5, atol=1e-6)
        for got, want in zip(jax.tree.leaves(final), jax.tree.leaves(expected_final), strict=True):
            np.testing.assert_allclose(got[i:i + 1], want, rtol=1e-5, atol=1e-6)


def test_bidirectional_lstm_checkpoint_restores_without_user_code(tmp_path):
    model = fn.with_context(fn.serial(fn.Bidirectional(fn.LSTM(4, return_sequences=True, mask="m"), merge="sum"),
                                      fn.Bidirectional(fn.GRU(3, reverse=True, mask="m")), fn.Dense(2)), "m")
    x = np.random.default_rng(4).standard_normal((2, 5, 3)).astype(np.float32)
    inputs = {"x": x, "m": np.array([3, 5], np.int32)}
    input_spec = fn.spec_of(inputs)
    params, state = random_params(model, input_spec)
    description = arch.describe(model)
    inner = description["children"][0]["children"][0]
    assert inner["kind"] == "Bidirectional" and inner["config"]["layer"]["kind"] == "LSTM"
    assert arch.describe(arch.from_json(arch.to_json(model, input_spec))) == description
    ck.save(tmp_path / "c", {"params": params, "state": state}, model=model, input_shape=input_spec)
    restored = ck.restore(tmp_path / "c")
    got = restored.model.apply(restored.tree["params"], restored.tree["state"], inputs)[0]
    np.testing.assert_array_equal(got, model.apply(params, state, inputs)[0])


def test_bad_layers_and_merges_are_named():
    with pytest.raises(TypeError, match=r"Bidirectional: `layer` must be one of \['GRU', 'LSTM', 'RNN', 'SimpleRNN'\]"
                                        r", got a Dense layer"):
        fn.Bidirectional(fn.Dense(3))
    with pytest.raises(ValueError, match=r"`merge` must be one of \['concat', 'sum', 'mul', 'ave', None\], got 'max'"):
        fn.Bidirectional(fn.LSTM(3), merge="max")
    with pytest.raises(arch.ArchitectureError, match=r"Bidirectional.*unexpected keyword argument 'peepholes'"):
        arch.rebuild({"kind": "Bidirectional", "name": None, "children": [],
                      "config": {"layer": {"kind": "LSTM", "config": {"units": 3, "peepholes": True}}}})


def test_errors_inside_name_the_direction():
    with pytest.raises(fn.ShapeError, match=r"(?s)Layer 'bidirectional_0/forward' \(LSTM\).*rank 3"):
        fn.serial(fn.Bidirectional(fn.LSTM(3))).init(jax.random.key(0), (None, 5))


def test_masked_bidirectional_matches_reference():
    layer = fn.with_context(fn.Bidirectional(fn.GRU(2, return_sequences=True, mask="m")), "m")
    x = np.random.default_rng(5).standard_normal((3, 4, 2))
    mask = np.array([[True, True, True, False], [False, True, True, True], [True, False, True, True]])
    params, state = random_params(layer, fn.spec_of({"x": x.astype(np.float32), "m": mask}))
    assert_matches_reference(lambda p, xx: layer.apply(p, state, {"x": xx, "m": mask})[0], params, x,
                             lambda p, xx: ref.bidirectional(p, {}, xx, kind="gru", merge="concat", valid=mask,
                                                             return_sequences=True))
