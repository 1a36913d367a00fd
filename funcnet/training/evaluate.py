"""``evaluate`` and ``predict``: a model over a whole data set, in padded batches, compiled once."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from funcnet.core import Layer, Params, State
from funcnet.losses import label_kind
from funcnet.metrics import Metric
from funcnet.training.batching import fits_on_device, host_batches
from funcnet.training.cache import cached
from funcnet.training.checks import check_labels, check_lengths, num_examples
from funcnet.training.loops import Batches, EvalLoop, eval_order
from funcnet.training.sharded import Layout, make_layout
from funcnet.training.step import TrainProgram, build_program

__all__ = ["evaluate", "predict"]


def as_arrays(tree: Any) -> Any:
    """Leaves that are not arrays yet (lists, scalars) become NumPy arrays."""
    return jax.tree.map(lambda a: a if hasattr(a, "shape") else np.asarray(a), tree)


def abstract_batch(x: Any, batch_size: int) -> Any:
    """Shape-and-dtype stand-ins for one batch of ``x`` (dtypes as JAX will store them)."""
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct((batch_size,) + tuple(a.shape[1:]),
                                                       jax.dtypes.canonicalize_dtype(a.dtype)), x)


def output_struct(model: Layer, params: Params, state: State, x: Any, batch_size: int) -> Any:
    """The model's outputs for one batch, as shapes and dtypes (nothing is computed).

    Layer errors (an input of the wrong shape) surface here, with the layer's path.
    """
    return jax.eval_shape(lambda p, s, xb: model.apply(p, s, xb, train=False)[0], params, state,
                          abstract_batch(x, batch_size))


def check_batch_size(batch_size: Any, what: str = "batch_size") -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`{what}` must be a positive integer, got {batch_size!r}.")


def check_mesh_batch_size(batch_size: int, layout: Layout | None, what: str = "batch_size") -> None:
    """With a mesh, ``batch_size`` must divide by the data axis's size (each device takes an equal part)."""
    if layout is not None and batch_size % layout.size:
        size, lower = layout.size, batch_size // layout.size * layout.size
        fix = f"{lower} or {lower + size}" if lower else f"{size}"
        raise ValueError(f"`{what}`={batch_size} does not divide evenly over the {size} devices of mesh axis "
                         f"{layout.data_axis!r}; use a multiple of {size} (for example {fix}). A last batch that is "
                         "not full is padded and masked, so the data set's size need not divide.")


def check_one_process(layout: Layout | None, caller: str) -> None:
    """With a mesh, ``fit``, ``evaluate`` and ``predict`` take the whole data set, so they run in one process.

    In a run of several processes each would hold only its own rows, which these functions would
    take for the whole data set: refused, rather than training on the wrong batches.
    """
    if layout is not None and jax.process_count() > 1:
        raise ValueError(f"{caller}(mesh=...) runs in one process (any number of its devices); this run has "
                         f"{jax.process_count()} processes. Across processes, loop over "
                         "make_train_step(..., mesh=mesh) yourself, each process feeding its own rows through "
                         "fn.sharding.shard_batch (docs/guides/many-hosts.md).")


def place_data(tree: Any, layout: Layout | None) -> Any:
    """Data kept on the device(s) for the run: on the default device, or split over the mesh's data axis."""
    return jax.device_put(tree) if layout is None else layout.put_resident(tree)


def data_fits(tree: Any, layout: Layout | None) -> bool:
    """Whether ``tree`` may stay on the device(s): each device of a mesh holds 1/N of it."""
    return fits_on_device(tree, 0.5 * (1 if layout is None else layout.size))


class Evaluator:
    """Evaluates one program on one data set, compiling once; used by evaluate and fit's validation."""

    def __init__(self, program: TrainProgram, x: Any, y: Any, sample_weight: Any, batch_size: int,
                 on_device: bool, outputs: Any, layout: Layout | None = None):
        self.program, self.batch_size, self.on_device, self.outputs = program, batch_size, on_device, outputs
        self.layout = layout
        self.n = num_examples(x)
        self.batches = Batches(self.n, batch_size, masked=self.n % batch_size != 0 or sample_weight is not None)
        loop = EvalLoop(program, self.batches, layout)
        self.order = eval_order(self.n, batch_size)
        if on_device:
            self.data = place_data((x, y, sample_weight), layout)
            self.order = jax.device_put(self.order)
            self.run = loop.evaluate_device()
        else:
            self.data = (x, y, sample_weight)
            self.run = loop.evaluate_host()
        self.compute = cached(("compute", program), lambda: jax.jit(program.tracker.compute))

    def __call__(self, params: Params, state: State) -> dict[str, Any]:
        acc = self.program.tracker.init(self.outputs)
        if self.on_device:
            acc = self.run(params, state, acc, self.data, self.order)
        else:
            for batch in host_batches(self.data, self.order, self.n, self.batches.masked, layout=self.layout):
                acc = self.run(params, state, acc, batch)
        return {k: (v.item() if v.ndim == 0 else v) for k, v in jax.device_get(self.compute(acc)).items()}


def evaluate(model: Layer, params: Params, state: State, x: Any, y: Any, *, loss: Any = None,
             metrics: Sequence[str | Metric] | str | Metric = (), batch_size: int = 256, sample_weight: Any = None,
             data_on_device: bool | None = None, mesh: jax.sharding.Mesh | None = None, data_axis: str = "data",
             param_sharding: str | None = None) -> dict[str, Any]:
    """The loss and metrics of the model (``train=False``) over a whole data set.

    Metrics accumulate counts over all batches, so the result is exact, not a mean of batch
    means; a ragged last batch is padded and masked (one compilation in all).

    Args:
        model, params, state: the model and its variables.
        x: inputs, an array (or pytree of arrays) with the examples on the first axis.
        y: labels (see the loss and metrics for their form).
        loss: a loss name or function, or None.
        metrics: metric names or :class:`funcnet.metrics.Metric` objects.
        batch_size: examples per compiled batch (does not change the result).
        sample_weight: optional per-example weights, shape ``(N,)``.
        data_on_device: put the data on the device first (default: when it takes less than half
            the device's free memory; always on the CPU).
        mesh, data_axis, param_sharding: run data-parallel on a ``jax.sharding.Mesh``, as
            :func:`funcnet.fit` does (the result equals one device's, to float32 rounding);
            ``batch_size`` must then divide by the data axis's size.

    Returns:
        ``{"loss": float, <metric name>: float (or array for per-class metrics)}``.

    Raises:
        ValueError, TypeError: for labels that do not fit the loss or model (see
            :func:`funcnet.training.check_labels`), or x and y of different lengths.
    """
    check_batch_size(batch_size)
    layout = make_layout(mesh, data_axis, param_sharding)
    check_one_process(layout, "evaluate")
    check_mesh_batch_size(batch_size, layout)
    program = build_program(model, loss, None, metrics=metrics, threshold=metric_threshold(loss), reuse=True)
    if loss is None and not program.tracker.metrics:
        raise ValueError("evaluate needs a loss or at least one metric to compute.")
    x, y, sample_weight = as_arrays(x), as_arrays(y), None if sample_weight is None else np.asarray(sample_weight)
    check_lengths(x, y, sample_weight)
    outputs = output_struct(model, params, state, x, batch_size)
    if program.loss_fn is not None:
        check_labels(y, outputs.shape, label_kind(program.loss_fn), loss_name=loss_display_name(loss))
    on_device = data_fits((x, y), layout) if data_on_device is None else data_on_device
    return Evaluator(program, x, y, sample_weight, batch_size, on_device, outputs, layout)(params, state)


def predict(model: Layer, params: Params, state: State, x: Any, *, batch_size: int = 256,
            data_on_device: bool | None = None, mesh: jax.sharding.Mesh | None = None, data_axis: str = "data",
            param_sharding: str | None = None) -> Any:
    """The model's outputs (``train=False``) for every example of ``x``, computed in batches.

    Args:
        model, params, state: the model and its variables.
        x: inputs with the examples on the first axis.
        batch_size: examples per compiled batch; a ragged last batch is padded (one compilation).
        data_on_device: as in :func:`evaluate`.
        mesh, data_axis, param_sharding: as in :func:`evaluate`.

    Returns:
        The outputs for all N examples, a JAX array (or pytree) of shape ``(N, ...)``.
    """
    check_batch_size(batch_size)
    layout = make_layout(mesh, data_axis, param_sharding)
    check_one_process(layout, "predict")
    check_mesh_batch_size(batch_size, layout)
    x = as_arrays(x)
    n = num_examples(x)
    output_struct(model, params, state, x, batch_size)  # layer errors surface here, with their path
    program = build_program(model, None, None, reuse=True)
    loop = EvalLoop(program, Batches(n, batch_size, masked=False), layout)
    order = eval_order(n, batch_size)
    on_device = data_fits(x, layout) if data_on_device is None else data_on_device
    if on_device:
        outputs = loop.predict_device()(params, state, place_data(x, layout), jax.device_put(order))
        return jax.tree.map(lambda a: a[:n], outputs)
    run = loop.predict_host()
    parts = [run(params, state, batch[0])
             for batch in host_batches((x, np.zeros(n), None), order, n, False, layout=layout)]
    return jax.tree.map(lambda *a: jnp.concatenate(a)[:n], *parts)


def validation_evaluator(program: Any, model: Layer, params: Params, state: State, validation_data: Any,
                         batch_size: int, kind: str | None, loss_name: str, data_on_device: bool | None,
                         layout: Layout | None) -> Evaluator:
    """Checks the validation data and builds its (compiled once) evaluator."""
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
        raise ValueError("`validation_data` must be a tuple (x_val, y_val) or (x_val, y_val, weights).")
    vx, vy = as_arrays(validation_data[0]), as_arrays(validation_data[1])
    vw = None if len(validation_data) == 2 or validation_data[2] is None else np.asarray(validation_data[2])
    check_lengths(vx, vy, vw, what="validation ")
    check_batch_size(batch_size, "validation_batch_size")
    check_mesh_batch_size(batch_size, layout, "validation_batch_size")
    outputs = output_struct(model, params, state, vx, batch_size)
    check_labels(vy, outputs.shape, kind, loss_name=f"{loss_name} (validation data)")
    on_device = data_fits((vx, vy), layout) if data_on_device is None else data_on_device
    return Evaluator(program, vx, vy, vw, batch_size, on_device, outputs, layout)


def validation_batch_size_for(batch_size: int, layout: Layout | None) -> int:
    """The default: ``max(batch_size, 256)``, rounded up to a multiple of the data axis's size."""
    size = 1 if layout is None else layout.size
    return -(-max(batch_size, 256) // size) * size


def metric_threshold(loss: Any) -> float | None:
    """0.5 for metrics on probabilities (binary cross-entropy with ``from_logits=False``)."""
    keywords = getattr(loss, "keywords", None) or {}
    return 0.5 if keywords.get("from_logits") is False else None


def loss_display_name(loss: Any) -> str:
    if isinstance(loss, str):
        return loss
    fn: Callable = getattr(loss, "func", loss)
    return getattr(fn, "__name__", "the loss")
