"""funcnet's two ways to train: the jitted step in a Python loop, and ``fit``."""

from __future__ import annotations

from typing import Any

import jax

import funcnet as fn
from benchmarks.contenders.base import Runner
from benchmarks.specs import Spec

LOSS = "sparse_categorical_crossentropy"


def build_model(spec: Spec) -> fn.Layer:
    """The network of ``spec`` as a funcnet Sequential."""
    layers: list[fn.Layer] = []
    for filters, pooled in spec.convs:
        layers.append(fn.Conv2D(filters, 3, activation="relu"))
        if pooled:
            layers.append(fn.MaxPool2D(2))
    layers.append(fn.Flatten())
    layers += [fn.Dense(units, activation="relu") for units in spec.dense]
    if spec.dropout:
        layers.append(fn.Dropout(spec.dropout))
    layers.append(fn.Dense(spec.classes))
    return fn.Sequential(layers)


class FuncnetStep(Runner):
    """``fn.make_train_step`` with its defaults (the non-finite guard on), called per batch.

    Its steps are traced and run under ``fn.layers.set_lowering(lowering)`` (jit's cache key
    includes the mode, so every call must be made under the same one).
    """

    skip_nonfinite = True
    lowering = "auto"

    def network(self) -> fn.Layer:
        """The model trained (subclasses for other kinds of network override this and :meth:`input_spec`)."""
        return build_model(self.spec)

    def input_spec(self) -> Any:
        """What ``init`` is given for the network's input."""
        return (None, *self.spec.image)

    def start(self) -> None:
        with fn.layers.set_lowering(self.lowering):
            self._start()

    def _start(self) -> None:
        model = self.network()
        _, self.params, self.state = model.init(jax.random.key(0), self.input_spec())
        self.step = fn.make_train_step(model, LOSS, "adam", learning_rate=1e-3,
                                       skip_nonfinite=self.skip_nonfinite)
        self.opt_state = fn.training.init_opt_state(self.params, "adam", learning_rate=1e-3)
        self.device_batches = [jax.device_put((self.x[self.batch(i)], self.y[self.batch(i)]))
                               for i in range(self.batches)]
        self.run(1)

    def run(self, steps: int) -> None:
        params, state, opt_state = self.params, self.state, self.opt_state
        logs = None
        with fn.layers.set_lowering(self.lowering):
            for _ in range(steps):
                batch = self.device_batches[self.step_count % self.batches]
                key = jax.random.key(self.step_count) if self.spec.dropout else None
                params, state, opt_state, logs = self.step(params, state, opt_state, batch, key)
                self.step_count += 1
        self.params, self.state, self.opt_state, self.logs = params, state, opt_state, logs
        jax.block_until_ready(logs)

    def loss(self) -> float:
        return float(self.logs["loss"])


class FuncnetStepNoGuard(FuncnetStep):
    """The same step with ``skip_nonfinite=False`` (no check for non-finite updates)."""

    skip_nonfinite = False


class FuncnetStepReference(FuncnetStep):
    """The step with every layer on its reference lowering (``lax`` convolution and pooling)."""

    lowering = "reference"


class FuncnetFit(Runner):
    """``fn.fit``: each :meth:`run` is one epoch over ``steps`` batches of the data (``verbose=0``).

    :meth:`start` runs a whole epoch over the data (``first_call_steps`` steps), since a first call
    on fewer steps would compile another scan length in ``"scan"`` mode. Each call of ``fit`` is
    made under ``fn.layers.set_lowering(lowering)``.
    """

    mode = "auto"
    steps_per_call: int | None = None
    lowering = "auto"
    network = FuncnetStep.network
    input_spec = FuncnetStep.input_spec

    def start(self) -> None:
        self.model = self.network()
        _, self.params, self.state = self.model.init(jax.random.key(0), self.input_spec())
        self.opt_state = None
        self.device_x, self.device_y = jax.device_put(self.x), jax.device_put(self.y)
        self.epoch = 0
        self.first_call_steps = self.batches
        self.run(self.batches)

    def run(self, steps: int) -> None:
        n = steps * self.spec.batch
        if n > len(self.x):
            raise ValueError(f"fit runs at most {self.batches} steps per call here, asked {steps}")
        x, y = (self.device_x, self.device_y) if n == len(self.x) else (self.x[:n], self.y[:n])
        with fn.layers.set_lowering(self.lowering):
            result = fn.fit(self.model, self.params, self.state, x, y, loss=LOSS, optimizer="adam",
                            learning_rate=1e-3, epochs=1, batch_size=self.spec.batch, verbose=0,
                            opt_state=self.opt_state, key=jax.random.key(self.epoch),
                            mode=self.mode, steps_per_call=self.steps_per_call)
        self.epoch += 1
        self.params, self.state, self.opt_state = result.params, result.state, result.opt_state
        self.history = result.history
        jax.block_until_ready(self.params)

    def loss(self) -> float:
        return float(self.history["loss"][-1])


def fit_runner(mode: str, steps_per_call: int | None = None,
               lowering: str = "auto") -> type[FuncnetFit]:
    """A :class:`FuncnetFit` with a given ``mode``, ``steps_per_call`` and layer lowering."""
    return type(f"FuncnetFit_{mode}_{steps_per_call}_{lowering}", (FuncnetFit,),
                {"mode": mode, "steps_per_call": steps_per_call, "lowering": lowering})
