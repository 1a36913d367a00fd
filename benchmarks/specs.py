"""The benchmarked networks, described once so that every library builds the same one.

An MLP is ``Flatten -> Dense(h) relu -> ... -> Dense(classes)``; the CNN is a stack of 3x3
``VALID`` convolutions with relu, some followed by 2x2 max pooling, then ``Flatten``, dense relu
layers and the output layer. Inputs are MNIST-shaped, ``(batch, 28, 28, 1)``, labels ``(batch,)``
integers; the loss is softmax cross-entropy, the optimizer Adam 1e-3.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Spec:
    """One benchmarked network and its batch size.

    Attributes:
        name: the key used in reports (``"cnn"``).
        title: how the report names it.
        batch: examples per step.
        convs: for a CNN, ``(filters, pooled)`` per 3x3 VALID convolution; empty for an MLP.
        dense: the hidden dense layers' widths (relu), before the output layer.
        dropout: the rate of a dropout layer before the output layer (0: none; only funcnet's
            contenders support it).
        classes: output units.
        image: the input's spatial size and channels.
    """

    name: str
    title: str
    batch: int
    convs: tuple[tuple[int, bool], ...] = ()
    dense: tuple[int, ...] = ()
    dropout: float = 0.0
    classes: int = 10
    image: tuple[int, int, int] = (28, 28, 1)

    @property
    def is_cnn(self) -> bool:
        return bool(self.convs)

    def flat_features(self) -> int:
        """The width of the flattened features entering the first dense layer."""
        height, width, channels = self.image
        for filters, pooled in self.convs:
            height, width, channels = height - 2, width - 2, filters
            if pooled:
                height, width = height // 2, width // 2
        return height * width * channels

    def flops_per_step(self) -> float:
        """Multiply-adds times 2 of the forward pass times 3 (forward and backward), per step."""
        height, width, channels = self.image
        total = 0
        for filters, pooled in self.convs:
            height, width = height - 2, width - 2
            total += height * width * 9 * channels * filters
            channels = filters
            if pooled:
                height, width = height // 2, width // 2
        features = height * width * channels
        for units in (*self.dense, self.classes):
            total += features * units
            features = units
        return 2.0 * 3.0 * total * self.batch


MODELS = {
    "mlp": Spec("mlp", "MLP 784-512-512-10, batch 128", 128, dense=(512, 512)),
    "cnn": Spec("cnn", "CNN Conv32-Pool-Conv64-Pool-Conv64-Dense64-Dense10, batch 128", 128,
                convs=((32, True), (64, True), (64, False)), dense=(64,)),
    "mlp_small": Spec("mlp_small", "MLP 784-256-10, batch 32", 32, dense=(256,)),
    # The README's CNN (funcnet's contenders only: it has dropout).
    "readme_cnn": Spec("readme_cnn",
                       "README CNN Conv32-Pool-Conv64-Pool-Dropout-Dense10, batch 128", 128,
                       convs=((32, True), (64, True)), dropout=0.25),
}

#: The same shapes of network, tiny, for smoke tests of the harness.
SMOKE_MODELS = {
    "mlp": Spec("mlp", "MLP 784-16-16-10, batch 8 (smoke)", 8, dense=(16, 16)),
    "cnn": Spec("cnn", "CNN Conv4-Pool-Conv8-Pool-Conv8-Dense8-Dense10, batch 8 (smoke)", 8,
                convs=((4, True), (8, True), (8, False)), dense=(8,)),
    "mlp_small": Spec("mlp_small", "MLP 784-16-10, batch 4 (smoke)", 4, dense=(16,)),
    "readme_cnn": Spec("readme_cnn", "CNN Conv4-Pool-Conv8-Pool-Dropout-Dense10 (smoke)", 8,
                       convs=((4, True), (8, True)), dropout=0.25),
}


def random_data(spec: Spec, batches: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-shaped random data for ``batches`` steps: images in [0, 1), integer labels (or the
    spec's own ``random_data``: the sequence specs of :mod:`benchmarks.seq_specs`)."""
    if hasattr(spec, "random_data"):
        return spec.random_data(batches, seed)
    rng = np.random.default_rng(seed)
    n = batches * spec.batch
    x = rng.random((n, *spec.image), dtype=np.float32)
    y = rng.integers(0, spec.classes, size=n).astype(np.int32)
    return x, y
