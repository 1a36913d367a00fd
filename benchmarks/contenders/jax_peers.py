"""The JAX contenders: a hand-written step, Flax linen, Flax NNX, Equinox and Haiku.

Each trains :mod:`benchmarks.specs`' network with ``optax.adam(1e-3)`` and
``optax.softmax_cross_entropy_with_integer_labels``, in one jitted step that donates the model
and optimizer state, as its library's documentation writes it. Batches are on the device before
timing starts (as they are for funcnet).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from benchmarks.contenders.base import Runner
from benchmarks.specs import Spec


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


class JaxRunner(Runner):
    """Shared by the functional JAX contenders: ``self.train_step(carry, x, y) -> (carry, loss)``
    over a carry of whatever the library keeps between steps."""

    layout = "NHWC"

    def start(self) -> None:
        x = self.x if self.layout == "NHWC" else self.x.transpose(0, 3, 1, 2)
        self.device_batches = [jax.device_put((x[self.batch(i)], self.y[self.batch(i)]))
                               for i in range(self.batches)]
        self.carry = self.build()
        self.run(1)

    def build(self) -> Any:
        raise NotImplementedError

    def run(self, steps: int) -> None:
        carry, loss = self.carry, None
        for _ in range(steps):
            x, y = self.device_batches[self.step_count % self.batches]
            carry, loss = self.train_step(carry, x, y)
            self.step_count += 1
        self.carry, self.last_loss = carry, loss
        jax.block_until_ready(loss)

    def loss(self) -> float:
        return float(self.last_loss)


# ---------------------------------------------------------------------------------------------
# Hand-written: dicts of arrays, lax.conv_general_dilated, lax.reduce_window.


def hand_params(spec: Spec, key: jax.Array) -> dict:
    glorot = jax.nn.initializers.glorot_uniform()
    params, channels = {}, spec.image[-1]
    keys = iter(jax.random.split(key, len(spec.convs) + len(spec.dense) + 1))
    for i, (filters, _) in enumerate(spec.convs):
        params[f"conv{i}"] = {"w": glorot(next(keys), (3, 3, channels, filters)),
                              "b": jnp.zeros(filters)}
        channels = filters
    features = spec.flat_features()
    for i, units in enumerate((*spec.dense, spec.classes)):
        params[f"dense{i}"] = {"w": glorot(next(keys), (features, units)), "b": jnp.zeros(units)}
        features = units
    return params


def hand_forward(spec: Spec, params: dict, x: jax.Array) -> jax.Array:
    for i, (_, pooled) in enumerate(spec.convs):
        p = params[f"conv{i}"]
        x = jax.lax.conv_general_dilated(x, p["w"], (1, 1), "VALID",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        x = jax.nn.relu(x + p["b"])
        if pooled:
            x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    x = x.reshape(x.shape[0], -1)
    layers = len(spec.dense) + 1
    for i in range(layers):
        p = params[f"dense{i}"]
        x = x @ p["w"] + p["b"]
        if i < layers - 1:
            x = jax.nn.relu(x)
    return x


def hand_step(spec: Spec, tx: optax.GradientTransformation):
    """The plain JAX training step (not jitted): ``(params, opt_state, x, y) -> (params,
    opt_state, loss)``."""

    def step(params: dict, opt_state: Any, x: jax.Array, y: jax.Array) -> tuple:
        def loss_fn(p: dict) -> jax.Array:
            return cross_entropy(hand_forward(spec, p, x), y)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


class HandJax(JaxRunner):
    def build(self) -> Any:
        tx = optax.adam(1e-3)
        params = hand_params(self.spec, jax.random.key(0))
        step = jax.jit(hand_step(self.spec, tx), donate_argnums=(0, 1))

        def train_step(carry: tuple, x: jax.Array, y: jax.Array) -> tuple:
            params, opt_state, loss = step(*carry, x, y)
            return (params, opt_state), loss

        self.train_step = train_step
        return params, tx.init(params)


# ---------------------------------------------------------------------------------------------
# Flax linen


class FlaxLinen(JaxRunner):
    def build(self) -> Any:
        from flax import linen as nn

        spec = self.spec

        class Net(nn.Module):
            @nn.compact
            def __call__(self, x: jax.Array) -> jax.Array:
                for filters, pooled in spec.convs:
                    x = nn.relu(nn.Conv(filters, (3, 3), padding="VALID")(x))
                    if pooled:
                        x = nn.max_pool(x, (2, 2), strides=(2, 2))
                x = x.reshape((x.shape[0], -1))
                for units in spec.dense:
                    x = nn.relu(nn.Dense(units)(x))
                return nn.Dense(spec.classes)(x)

        net, tx = Net(), optax.adam(1e-3)
        params = net.init(jax.random.key(0), jnp.zeros((1, *spec.image)))["params"]

        def step(params: Any, opt_state: Any, x: jax.Array, y: jax.Array) -> tuple:
            def loss_fn(p: Any) -> jax.Array:
                return cross_entropy(net.apply({"params": p}, x), y)

            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        jitted = jax.jit(step, donate_argnums=(0, 1))
        self.train_step = lambda carry, x, y: jitted(*carry, x, y)
        return params, tx.init(params)


# ---------------------------------------------------------------------------------------------
# Flax NNX


class FlaxNNX(JaxRunner):
    def build(self) -> Any:
        from flax import nnx

        spec = self.spec

        class Net(nnx.Module):
            def __init__(self, rngs: nnx.Rngs) -> None:
                convs, channels = [], spec.image[-1]
                for filters, _ in spec.convs:
                    convs.append(nnx.Conv(channels, filters, (3, 3), padding="VALID", rngs=rngs))
                    channels = filters
                self.convs = nnx.List(convs)
                dense, features = [], spec.flat_features()
                for units in (*spec.dense, spec.classes):
                    dense.append(nnx.Linear(features, units, rngs=rngs))
                    features = units
                self.dense = nnx.List(dense)

            def __call__(self, x: jax.Array) -> jax.Array:
                for conv, (_, pooled) in zip(self.convs, spec.convs, strict=True):
                    x = nnx.relu(conv(x))
                    if pooled:
                        x = nnx.max_pool(x, (2, 2), strides=(2, 2))
                x = x.reshape((x.shape[0], -1))
                for layer in self.dense[:-1]:
                    x = nnx.relu(layer(x))
                return self.dense[-1](x)

        model = Net(nnx.Rngs(0))
        optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

        @nnx.jit
        def step(model: Net, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array) -> jax.Array:
            def loss_fn(model: Net) -> jax.Array:
                return cross_entropy(model(x), y)

            loss, grads = nnx.value_and_grad(loss_fn)(model)
            optimizer.update(model, grads)
            return loss

        def train_step(carry: tuple, x: jax.Array, y: jax.Array) -> tuple:
            return carry, step(*carry, x, y)

        self.train_step = train_step
        return model, optimizer


# ---------------------------------------------------------------------------------------------
# Equinox (channels-first, one example at a time under jax.vmap, as Equinox layers expect)


class Equinox(JaxRunner):
    layout = "NCHW"

    def build(self) -> Any:
        import equinox as eqx

        spec = self.spec
        keys = iter(jax.random.split(jax.random.key(0), len(spec.convs) + len(spec.dense) + 1))

        class Net(eqx.Module):
            convs: list
            dense: list
            pool: eqx.nn.MaxPool2d

            def __init__(self) -> None:
                self.convs, channels = [], spec.image[-1]
                for filters, _ in spec.convs:
                    self.convs.append(eqx.nn.Conv2d(channels, filters, 3, key=next(keys)))
                    channels = filters
                self.dense, features = [], spec.flat_features()
                for units in (*spec.dense, spec.classes):
                    self.dense.append(eqx.nn.Linear(features, units, key=next(keys)))
                    features = units
                self.pool = eqx.nn.MaxPool2d(2, 2)

            def __call__(self, x: jax.Array) -> jax.Array:
                for conv, (_, pooled) in zip(self.convs, spec.convs, strict=True):
                    x = jax.nn.relu(conv(x))
                    if pooled:
                        x = self.pool(x)
                x = x.reshape(-1)
                for layer in self.dense[:-1]:
                    x = jax.nn.relu(layer(x))
                return self.dense[-1](x)

        model, tx = Net(), optax.adam(1e-3)

        @eqx.filter_jit
        def step(model: Net, opt_state: Any, x: jax.Array, y: jax.Array) -> tuple:
            def loss_fn(model: Net) -> jax.Array:
                return cross_entropy(jax.vmap(model)(x), y)

            loss, grads = eqx.filter_value_and_grad(loss_fn)(model)
            updates, opt_state = tx.update(grads, opt_state, eqx.filter(model, eqx.is_array))
            return eqx.apply_updates(model, updates), opt_state, loss

        def train_step(carry: tuple, x: jax.Array, y: jax.Array) -> tuple:
            model, opt_state, loss = step(*carry, x, y)
            return (model, opt_state), loss

        self.train_step = train_step
        return model, tx.init(eqx.filter(model, eqx.is_array))


# ---------------------------------------------------------------------------------------------
# Haiku


class Haiku(JaxRunner):
    def build(self) -> Any:
        import haiku as hk

        spec = self.spec

        def forward(x: jax.Array) -> jax.Array:
            for filters, pooled in spec.convs:
                x = jax.nn.relu(hk.Conv2D(filters, 3, padding="VALID")(x))
                if pooled:
                    x = hk.MaxPool(2, 2, "VALID")(x)
            x = hk.Flatten()(x)
            for units in spec.dense:
                x = jax.nn.relu(hk.Linear(units)(x))
            return hk.Linear(spec.classes)(x)

        net, tx = hk.without_apply_rng(hk.transform(forward)), optax.adam(1e-3)
        params = net.init(jax.random.key(0), jnp.zeros((1, *spec.image)))

        def step(params: Any, opt_state: Any, x: jax.Array, y: jax.Array) -> tuple:
            loss, grads = jax.value_and_grad(lambda p: cross_entropy(net.apply(p, x), y))(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        jitted = jax.jit(step, donate_argnums=(0, 1))
        self.train_step = lambda carry, x, y: jitted(*carry, x, y)
        return params, tx.init(params)
