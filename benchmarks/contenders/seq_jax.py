"""The JAX contenders of the sequence benchmark: hand-written LSTMs and encoder, Flax linen's LSTM.

Each trains a :mod:`benchmarks.seq_specs` network with ``optax.adam(1e-3)`` and softmax
cross-entropy in one jitted step that donates the params and optimizer state (the step of
:class:`benchmarks.contenders.jax_peers.JaxRunner`).

* :class:`HandLSTM`: the LSTM as usually hand-written for speed: the input projection of every
  step as one product before a ``jax.lax.scan`` that runs only the recurrent part.
* :class:`HandLSTMInLoop`: the same equations with each step's input projection inside the scan,
  which XLA's CPU backend runs faster (see docs/benchmarks.md, "Sequence models").
* :class:`HandLSTMCustomVJP`: the in-loop form with a ``jax.custom_vjp`` whose backward loop runs
  only the gates' gradient and ``dh``, the weight gradients as single products after it (the way
  cuDNN and PyTorch compute it; on 2 CPU cores slower than autodiff of the in-loop scan, which
  runs the small weight-gradient products on the second core, so funcnet keeps autodiff).
* :class:`FlaxLinenLSTM`: ``nn.RNN(nn.OptimizedLSTMCell(units))`` and ``nn.Dense``.
* :class:`HandEncoder`: the pre-norm encoder with dicts of arrays, ``jnp.einsum`` projections and
  ``jax.nn.dot_product_attention``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from benchmarks.contenders.jax_peers import JaxRunner
from benchmarks.seq_specs import EncoderSpec, LSTMSpec

glorot = jax.nn.initializers.glorot_uniform()


def _jitted_step(loss_fn: Any, tx: optax.GradientTransformation) -> Any:
    """``train_step(carry, x, y) -> (carry, loss)`` over ``carry = (params, opt_state)``, jitted."""

    def step(params: Any, opt_state: Any, x: jax.Array, y: jax.Array) -> tuple:
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    jitted = jax.jit(step, donate_argnums=(0, 1))
    return lambda carry, x, y: jitted(*carry, x, y)


# ---------------------------------------------------------------------------------------------
# LSTM classifier


def lstm_params(spec: LSTMSpec, key: jax.Array) -> dict:
    """Glorot ``w``, orthogonal ``u``, forget-gate bias 1 (funcnet's and Keras's initialisation)."""
    w_key, u_key, out_key = jax.random.split(key, 3)
    width = 4 * spec.units
    return {"w": glorot(w_key, (spec.features, width)),
            "u": jax.nn.initializers.orthogonal()(u_key, (spec.units, width)),
            "b": jnp.zeros(width).at[spec.units:2 * spec.units].set(1.0),
            "out": {"w": glorot(out_key, (spec.units, spec.classes)), "b": jnp.zeros(spec.classes)}}


def lstm_cell(u: jax.Array, carry: tuple, a: jax.Array) -> tuple:
    """One LSTM step from the input projection ``a = x_t @ w + b``, gates ``i, f, g, o``."""
    h, c = carry
    i, f, g, o = jnp.split(a + h @ u, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    return jax.nn.sigmoid(o) * jnp.tanh(c), c


def lstm_hoisted(p: dict, x: jax.Array) -> jax.Array:
    """The last ``h`` of the LSTM over ``x`` ``(N, T, F)``, the input projection before the scan."""
    projected = jnp.swapaxes(x @ p["w"] + p["b"], 0, 1)
    zeros = jnp.zeros((x.shape[0], p["u"].shape[0]), x.dtype)
    (h, _), _ = jax.lax.scan(lambda carry, a: (lstm_cell(p["u"], carry, a), None), (zeros, zeros), projected)
    return h


def lstm_in_loop(p: dict, x: jax.Array) -> jax.Array:
    """The same, each step projecting its own input inside the scan."""
    zeros = jnp.zeros((x.shape[0], p["u"].shape[0]), x.dtype)

    def body(carry: tuple, x_t: jax.Array) -> tuple:
        return lstm_cell(p["u"], carry, x_t @ p["w"] + p["b"]), None

    (h, _), _ = jax.lax.scan(body, (zeros, zeros), jnp.swapaxes(x, 0, 1))
    return h


def _lstm_forward(p: dict, xs: jax.Array, carry: tuple) -> tuple:
    """The in-loop scan over time-major ``xs``, saving each step's pre-activation and previous state."""

    def body(carry: tuple, x_t: jax.Array) -> tuple:
        a = x_t @ p["w"] + p["b"] + carry[0] @ p["u"]
        return lstm_cell_from_pre(carry, a), (a, carry)

    return jax.lax.scan(body, carry, xs)


def lstm_cell_from_pre(carry: tuple, a: jax.Array) -> tuple:
    """:func:`lstm_cell` given the whole pre-activation ``a = x_t @ w + b + h @ u``."""
    _, c = carry
    i, f, g, o = jnp.split(a, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    return jax.nn.sigmoid(o) * jnp.tanh(c), c


@jax.custom_vjp
def lstm_scan_custom_vjp(p: dict, xs: jax.Array, carry: tuple) -> tuple:
    """The final ``(h, c)`` of the in-loop scan, with the backward pass of :func:`_lstm_scan_backward`."""
    return _lstm_forward(p, xs, carry)[0]


def _lstm_scan_forward(p: dict, xs: jax.Array, carry: tuple) -> tuple:
    final, (pre, previous) = _lstm_forward(p, xs, carry)
    return final, (p, xs, pre, previous)


def _lstm_scan_backward(residuals: tuple, d_final: tuple) -> tuple:
    p, xs, pre, previous = residuals

    def body(d_carry: tuple, saved: tuple) -> tuple:
        _, vjp = jax.vjp(lstm_cell_from_pre, saved[1], saved[0])
        (d_h, d_c), d_pre = vjp(d_carry)
        return (d_h + d_pre @ p["u"].T, d_c), d_pre

    d_carry, d_pre = jax.lax.scan(body, d_final, (pre, previous), reverse=True)
    d_p = {"w": jnp.einsum("tnf,tng->fg", xs, d_pre), "u": jnp.einsum("tnu,tng->ug", previous[0], d_pre),
           "b": d_pre.sum((0, 1))}
    return d_p, d_pre @ p["w"].T, d_carry


lstm_scan_custom_vjp.defvjp(_lstm_scan_forward, _lstm_scan_backward)


def lstm_custom_vjp(p: dict, x: jax.Array) -> jax.Array:
    """The last ``h``, through :func:`lstm_scan_custom_vjp`."""
    zeros = jnp.zeros((x.shape[0], p["u"].shape[0]), x.dtype)
    weights = {name: p[name] for name in ("w", "u", "b")}
    return lstm_scan_custom_vjp(weights, jnp.swapaxes(x, 0, 1), (zeros, zeros))[0]


def classifier_loss(lstm: Any) -> Any:
    def loss_fn(p: dict, x: jax.Array, y: jax.Array) -> jax.Array:
        logits = lstm(p, x) @ p["out"]["w"] + p["out"]["b"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    return loss_fn


class HandLSTM(JaxRunner):
    lstm = staticmethod(lstm_hoisted)

    def build(self) -> Any:
        tx = optax.adam(1e-3)
        params = lstm_params(self.spec, jax.random.key(0))
        self.train_step = _jitted_step(classifier_loss(self.lstm), tx)
        return params, tx.init(params)


class HandLSTMInLoop(HandLSTM):
    lstm = staticmethod(lstm_in_loop)


class HandLSTMCustomVJP(HandLSTM):
    lstm = staticmethod(lstm_custom_vjp)


class FlaxLinenLSTM(JaxRunner):
    def build(self) -> Any:
        from flax import linen as nn

        spec = self.spec

        class Net(nn.Module):
            @nn.compact
            def __call__(self, x: jax.Array) -> jax.Array:
                (_, h), _ = nn.RNN(nn.OptimizedLSTMCell(spec.units), return_carry=True)(x)
                return nn.Dense(spec.classes)(h)

        net, tx = Net(), optax.adam(1e-3)
        params = net.init(jax.random.key(0), jnp.zeros((1, spec.steps, spec.features)))["params"]

        def loss_fn(p: Any, x: jax.Array, y: jax.Array) -> jax.Array:
            return optax.softmax_cross_entropy_with_integer_labels(net.apply({"params": p}, x), y).mean()

        self.train_step = _jitted_step(loss_fn, tx)
        return params, tx.init(params)


# ---------------------------------------------------------------------------------------------
# Transformer encoder


def _dense(key: jax.Array, shape: tuple[int, ...], out: tuple[int, ...]) -> dict:
    return {"w": glorot(key, shape), "b": jnp.zeros(out)}


def _norm(width: int) -> dict:
    return {"scale": jnp.ones(width), "bias": jnp.zeros(width)}


def encoder_params(spec: EncoderSpec, key: jax.Array) -> dict:
    """Embedding and positions ``normal(0.02)``; projections Glorot over ``(C, H, D)`` as a
    ``(C, H*D)`` matrix would be; zero biases; LayerNorm scale 1, bias 0."""
    c, h, d = spec.width, spec.heads, spec.width // spec.heads
    keys = iter(jax.random.split(key, 3 + 6 * spec.blocks))
    normal = jax.nn.initializers.normal(0.02)
    blocks = []
    for _ in range(spec.blocks):
        attention = {name: {"w": glorot(next(keys), (c, c)).reshape(c, h, d), "b": jnp.zeros((h, d))}
                     for name in ("query", "key", "value")}
        attention["output"] = {"w": glorot(next(keys), (c, c)).reshape(h, d, c), "b": jnp.zeros(c)}
        blocks.append({"norm1": _norm(c), "attention": attention, "norm2": _norm(c),
                       "hidden": _dense(next(keys), (c, spec.mlp), (spec.mlp,)),
                       "output": _dense(next(keys), (spec.mlp, c), (c,))})
    return {"embed": normal(next(keys), (spec.vocab, c)), "positions": normal(next(keys), (spec.length, c)),
            "blocks": blocks, "norm": _norm(c), "head": _dense(next(keys), (c, spec.vocab), (spec.vocab,))}


def layer_norm(p: dict, x: jax.Array, epsilon: float) -> jax.Array:
    mean = x.mean(-1, keepdims=True)
    variance = jnp.square(x - mean).mean(-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(variance + epsilon) * p["scale"] + p["bias"]


def attention(p: dict, x: jax.Array) -> jax.Array:
    q, k, v = (jnp.einsum("ntc,chd->nthd", x, p[n]["w"]) + p[n]["b"] for n in ("query", "key", "value"))
    out = jax.nn.dot_product_attention(q, k, v)
    return jnp.einsum("nthd,hdc->ntc", out, p["output"]["w"]) + p["output"]["b"]


def encoder_forward(spec: EncoderSpec, p: dict, tokens: jax.Array) -> jax.Array:
    """Logits ``(N, T, vocab)`` for tokens ``(N, T)``."""
    x = p["embed"][tokens] + p["positions"]
    for block in p["blocks"]:
        x = x + attention(block["attention"], layer_norm(block["norm1"], x, spec.epsilon))
        hidden = layer_norm(block["norm2"], x, spec.epsilon) @ block["hidden"]["w"] + block["hidden"]["b"]
        x = x + jax.nn.gelu(hidden) @ block["output"]["w"] + block["output"]["b"]
    return layer_norm(p["norm"], x, spec.epsilon) @ p["head"]["w"] + p["head"]["b"]


class HandEncoder(JaxRunner):
    def build(self) -> Any:
        spec, tx = self.spec, optax.adam(1e-3)
        params = encoder_params(spec, jax.random.key(0))

        def loss_fn(p: dict, x: jax.Array, y: jax.Array) -> jax.Array:
            return optax.softmax_cross_entropy_with_integer_labels(encoder_forward(spec, p, x), y).mean()

        self.train_step = _jitted_step(loss_fn, tx)
        return params, tx.init(params)
