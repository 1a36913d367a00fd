"""MultiHeadAttention against torch.nn.MultiheadAttention with copied weights: forward and gradients.

Skipped without torch (it is in the ``bench`` extra, not ``test``). torch packs the heads' projections
as rows ``head * head_size + d`` of ``(embed_dim, features)`` matrices; funcnet keeps heads as an axis.
torch's masks are True where a key is *ignored*; funcnet's are True where it may be attended to.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet as fn

torch = pytest.importorskip("torch")

HEADS, EMBED = 2, 6
HEAD_SIZE = EMBED // HEADS


def torch_weights(module, grad=False):
    """The q, k, v, output matrices ``(embed, features)`` and biases of a torch MultiheadAttention (or their
    gradients)."""
    def get(name):
        tensor = module.get_parameter(name)
        return tensor.grad if grad else tensor

    if module._qkv_same_embed_dim:
        wq, wk, wv = get("in_proj_weight").chunk(3)
    else:
        wq, wk, wv = get("q_proj_weight"), get("k_proj_weight"), get("v_proj_weight")
    bq, bk, bv = get("in_proj_bias").chunk(3)
    return {"query": (wq, bq), "key": (wk, bk), "value": (wv, bv),
            "output": (get("out_proj.weight"), get("out_proj.bias"))}


def to_funcnet(weights, dtype):
    """torch's matrices as funcnet's params: {"w": (features, heads, head_size), "b": (heads, head_size)}."""
    def array(t):
        return np.asarray(t.detach().numpy(), dtype)

    params = {part: {"w": array(w).T.reshape(-1, HEADS, HEAD_SIZE), "b": array(b).reshape(HEADS, HEAD_SIZE)}
              for part, (w, b) in weights.items() if part != "output"}
    w, b = weights["output"]
    params["output"] = {"w": array(w).T.reshape(HEADS, HEAD_SIZE, -1), "b": array(b)}
    return params


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-9), (np.float32, 1e-5)])
@pytest.mark.parametrize("cross", [False, True], ids=["self", "cross"])
def test_forward_and_gradients_match_torch(dtype, rtol, cross):
    rng = np.random.default_rng(0)
    n, t, s = 2, 4, 5 if cross else 4
    key_features, value_features = (3, 4) if cross else (EMBED, EMBED)
    torch.manual_seed(0)
    module = torch.nn.MultiheadAttention(EMBED, HEADS, batch_first=True, kdim=key_features, vdim=value_features,
                                         dtype=getattr(torch, np.dtype(dtype).name))
    with torch.no_grad():  # non-zero biases, so they are compared too
        module.in_proj_bias.normal_()
        module.out_proj.bias.normal_()
    query = rng.standard_normal((n, t, EMBED)).astype(dtype)
    key = rng.standard_normal((n, s, key_features)).astype(dtype) if cross else query
    value = rng.standard_normal((n, s, value_features)).astype(dtype) if cross else query
    padding = np.ones((n, s), bool)
    padding[1, -2:] = False  # no query is left without keys: torch gives NaN there, funcnet zeros
    probe = rng.standard_normal((n, t, EMBED))

    inputs = [torch.tensor(a, requires_grad=True) for a in ((query,) if not cross else (query, key, value))]
    q_t, k_t, v_t = (inputs * 3)[:3] if not cross else inputs
    causal = None if cross else torch.tensor(~np.tril(np.ones((t, s), bool)))
    expected, _ = module(q_t, k_t, v_t, key_padding_mask=torch.tensor(~padding), attn_mask=causal, need_weights=False)
    (expected * torch.tensor(probe, dtype=expected.dtype)).sum().backward()
    torch_params = torch_weights(module)
    expected_grads = to_funcnet(torch_weights(module, grad=True), np.float64)

    layer = fn.MultiHeadAttention(HEADS, HEAD_SIZE, causal=not cross, mask="padding")
    with jax.enable_x64(dtype == np.float64):
        params = to_funcnet(torch_params, dtype)
        x = {"query": query, "key": key, "value": value} if cross else query

        def loss(p, xx):
            y, _ = layer.apply(p, {}, xx, context={"padding": padding})
            return jnp.sum(y * probe.astype(dtype)), y

        (_, y), (grads, x_grads) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(params, x)
    np.testing.assert_allclose(y, expected.detach().numpy(), rtol=rtol, atol=rtol)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol), grads, expected_grads)
    wanted = [i.grad.numpy() for i in inputs]
    got = [x_grads[k] for k in ("query", "key", "value")] if cross else [x_grads]
    for a, b in zip(got, wanted, strict=True):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol)
