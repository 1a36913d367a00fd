"""Rebuilding accepts, per layer kind, only the config keys that kind records, with values of the
recorded types; constructors check that initializers are callable (issue 11, item 4)."""

from __future__ import annotations

import re

import jax
import numpy as np
import pytest

import funcnet as fn
from funcnet import architecture as arch
from funcnet import checkpoint as ck
from tests.checkpoint_helpers import edit_manifest


def _rebuild(kind: str, config: dict) -> fn.Layer:
    return arch.rebuild({"kind": kind, "name": None, "config": config, "children": []})


@pytest.mark.parametrize(("kind", "config", "message"), [
    ("Dense", {"units": 2, "activation": None, "use_bias": True, "rank": 2, "w_init": "os.system"},
     "config keys ['w_init'] are not among those Dense records (['activation', 'rank', 'units', 'use_bias'])"),
    ("Embedding", {"vocab_size": 5, "features": 2, "w_init": "eval"}, ("config keys ['w_init'] are not among "
                                                                      "those Embedding records")),
    ("Conv2D", {"filters": 2, "kernel_size": [3, 3], "lowering": "reference"}, ("config keys ['lowering'] are not "
                                                                               "among those Conv2D records")),
    ("FanOut", {"num": 2, "extra": 1}, "config keys ['extra'] are not among those FanOut records (['num'])"),
    ("Dense", {"units": 2, "use_bias": 1}, "config 'use_bias' must be a bool, as Dense records it, got int 1"),
    ("Dense", {"units": 2, "rank": 2.0}, "config 'rank' must be a int, as Dense records it, got float 2.0"),
    ("BatchNorm", {"momentum": "0.9"}, "config 'momentum' must be a float, as BatchNorm records it, got str '0.9'"),
    ("BatchNorm", {"epsilon": True}, "config 'epsilon' must be a float, as BatchNorm records it, got bool True"),
    ("Embedding", {"features": 2}, "config lacks ['vocab_size'], which Embedding needs"),
], ids=["dense_w_init", "embedding_w_init", "conv_lowering", "fan_out_extra", "bool_as_int", "int_as_float",
        "float_as_string", "float_as_bool", "missing_required"])
def test_rebuild_refuses_keys_and_types_the_kind_never_records(kind, config, message):
    with pytest.raises(arch.ArchitectureError, match=rf"cannot rebuild layer 'model' \({kind}\) .*"
                                                     + re.escape(message)):
        _rebuild(kind, config)


def test_residual_refuses_keys_it_never_records():
    description = {"kind": "Residual", "name": None, "config": {"shortcut": False, "w_init": "os.system"},
                   "children": [{"kind": "Dense", "name": None, "config": {"units": 3}, "children": []}]}
    with pytest.raises(arch.ArchitectureError, match=re.escape("config keys ['w_init'] are not among those "
                                                               "Residual records (['shortcut'])")):
        arch.rebuild(description)


def test_an_int_may_stand_for_a_recorded_float():
    layer = _rebuild("BatchNorm", {"momentum": 0, "epsilon": 1, "use_scale": True, "use_bias": False})
    assert layer.config["momentum"] == 0 and layer.config["epsilon"] == 1


def test_a_crafted_checkpoint_architecture_is_refused_at_rebuild(tmp_path):
    """The issue's case: a Dense config with an extra "w_init": "os.system" used to build, and
    init then failed with "'str' object is not callable"."""
    model = fn.serial(fn.Dense(4, activation="relu"), fn.Dense(2))
    _, params, state = model.init(jax.random.key(0), (None, 3))
    path = ck.save(tmp_path / "c", {"params": params, "state": state}, model=model, input_shape=(None, 3))
    edit_manifest(path, lambda m: m["architecture"]["model"]["children"][0]["config"].update(w_init="os.system"))
    restored = ck.restore(path)
    with pytest.raises(arch.ArchitectureError, match=re.escape("cannot rebuild layer 'model/dense_0' (Dense)")
                       + r".*config keys \['w_init'\] are not among those Dense records"):
        restored.model  # noqa: B018  (the property rebuilds)


def test_descriptions_that_describe_wrote_still_rebuild():
    model = fn.serial(fn.Conv2D(4, 3, padding="SAME", groups=1, activation="relu"), fn.BatchNorm(momentum=0.9),
                      fn.MaxPool2D(2), fn.Flatten(), fn.Dropout(0.1), fn.Dense(3, use_bias=False))
    rebuilt = arch.from_json(arch.to_json(model))
    assert arch.describe(rebuilt) == arch.describe(model)


@pytest.mark.parametrize(("make", "message"), [
    (lambda: fn.Dense(3, w_init="os.system"), ("Dense: `w_init` must be a callable, such as an initializer from "
                                              "jax.nn.initializers (e.g. jax.nn.initializers.he_normal()), got str "
                                              "'os.system'.")),
    (lambda: fn.Dense(3, b_init=0.0), "Dense: `b_init` must be a callable, such as an initializer"),
    (lambda: fn.Conv2D(3, 3, w_init=None), "Conv2D: `w_init` must be a callable, such as an initializer"),
    (lambda: fn.ConvTranspose1D(3, 3, b_init=np.zeros(3)), "ConvTranspose1D: `b_init` must be a callable"),
    (lambda: fn.Embedding(5, 2, w_init="normal"), "Embedding: `w_init` must be a callable"),
], ids=["dense_w", "dense_b", "conv_w", "conv_transpose_b", "embedding_w"])
def test_constructors_check_that_initializers_are_callable(make, message):
    with pytest.raises(TypeError, match=re.escape(message)):
        make()
