"""funcnet's recurrent layers against torch.nn.RNN / GRU / LSTM with copied weights: outputs, final
states and gradients (w.r.t. the input and every weight) at 1e-5 relative, one direction and
bidirectional, with and without packed (per-example) lengths. Skipped when torch is not installed
(it is in ``.[bench]``, not ``.[test]``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet as fn

torch = pytest.importorskip("torch")

UNITS, FEATURES, STEPS = 5, 4, 6
LENGTHS = np.array([6, 3, 1])
#: Where funcnet's gate blocks come from in torch's: GRU orders its gates r, z, n, funcnet z, r, h.
GATE_ORDER = {"gru": np.r_[UNITS:2 * UNITS, 0:UNITS, 2 * UNITS:3 * UNITS]}


def torch_module(kind, bidirectional):
    torch.manual_seed(0)
    module = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[kind]
    return module(FEATURES, UNITS, batch_first=True, bidirectional=bidirectional)


def funcnet_layer(kind, bidirectional, lengths):
    options = {"return_sequences": True, "return_state": True, "mask": "lengths" if lengths else None}
    layer = {"rnn": fn.SimpleRNN, "gru": fn.GRU, "lstm": fn.LSTM}[kind](UNITS, **options)
    layer = fn.Bidirectional(layer) if bidirectional else layer
    return fn.with_context(layer, "lengths") if lengths else layer


def copied(kind, module, suffix, gradients=False):
    """funcnet params (w = W_ih^T, u = W_hh^T) from torch's weights of one direction, or from their gradients."""
    order = GATE_ORDER.get(kind, slice(None))
    w_ih, w_hh, b_ih, b_hh = ((t.grad if gradients else t.detach()).numpy()[order]
                              for t in (getattr(module, f"{name}_l0{suffix}")
                                        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")))
    if kind == "gru":
        return {"w": w_ih.T, "u": w_hh.T, "b": b_ih, "b_u": b_hh}
    # One bias for torch's two, which add up: each of those has the gradient of the sum.
    return {"w": w_ih.T, "u": w_hh.T, "b": b_ih if gradients else b_ih + b_hh}


def params_of(kind, module, bidirectional, gradients=False):
    if not bidirectional:
        return copied(kind, module, "", gradients)
    return {"forward": copied(kind, module, "", gradients), "backward": copied(kind, module, "_reverse", gradients)}


def torch_run(module, kind, x, lengths):
    """torch's outputs (N, T, directions * units) and final state(s), each (N, directions * units)."""
    inputs = torch.from_numpy(x).requires_grad_(True)
    if lengths is None:
        outputs, final = module(inputs)
    else:
        packed = torch.nn.utils.rnn.pack_padded_sequence(inputs, torch.from_numpy(lengths), batch_first=True,
                                                         enforce_sorted=False)
        outputs, final = module(packed)
        outputs, _ = torch.nn.utils.rnn.pad_packed_sequence(outputs, batch_first=True, total_length=STEPS)
    finals = final if kind == "lstm" else (final,)
    return inputs, outputs, finals  # each final: (directions, N, units)


def funcnet_finals(state, kind, bidirectional):
    """funcnet's final state(s) in torch's layout: a tuple of (directions, N, units)."""
    states = state if bidirectional else (state,)
    per_direction = [s if kind == "lstm" else (s,) for s in states]  # each: (h,) or (h, c)
    return tuple(jnp.stack([d[i] for d in per_direction]) for i in range(len(per_direction[0])))


@pytest.mark.parametrize("lengths", [False, True], ids=["full", "packed"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["one_way", "bidirectional"])
@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
def test_matches_torch_forward_and_gradients(kind, bidirectional, lengths):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, STEPS, FEATURES)).astype(np.float32)
    lengths = LENGTHS if lengths else None
    module = torch_module(kind, bidirectional)
    inputs, outputs, finals = torch_run(module, kind, x, lengths)
    out_probe = rng.standard_normal(outputs.shape).astype(np.float32)
    final_probes = [rng.standard_normal(f.shape).astype(np.float32) for f in finals]
    loss = (outputs * torch.from_numpy(out_probe)).sum() + sum(
        (f * torch.from_numpy(p)).sum() for f, p in zip(finals, final_probes, strict=True))
    loss.backward()

    layer = funcnet_layer(kind, bidirectional, lengths is not None)
    params = jax.tree.map(jnp.asarray, params_of(kind, module, bidirectional))

    def funcnet_loss(p, xx):
        feed = {"x": xx, "lengths": lengths.astype(np.int32)} if lengths is not None else xx
        (y, state), _ = layer.apply(p, {}, feed)
        got_finals = funcnet_finals(state, kind, bidirectional)
        total = jnp.sum(y * out_probe) + sum(jnp.sum(f * p) for f, p in zip(got_finals, final_probes, strict=True))
        return total, (y, got_finals)

    (_, (y, got_finals)), (param_grads, x_grad) = jax.value_and_grad(funcnet_loss, argnums=(0, 1), has_aux=True)(
        params, jnp.asarray(x))

    # float32 on both sides: 1e-5 relative, and an atol for values near zero after six steps.
    def close(got, expected, what):
        np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-6, err_msg=what)

    close(y, outputs.detach().numpy(), "outputs")
    for got, expected in zip(got_finals, finals, strict=True):
        close(got, expected.detach().numpy(), "final state")
    close(x_grad, inputs.grad.numpy(), "gradient w.r.t. x")
    expected_grads = params_of(kind, module, bidirectional, gradients=True)
    jax.tree_util.tree_map_with_path(lambda path, g, e: close(g, e, f"gradient w.r.t. {jax.tree_util.keystr(path)}"),
                                     param_grads, expected_grads)
