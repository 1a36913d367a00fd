"""The layer catalogue. Constructors are CamelCase and return a :class:`funcnet.Layer`."""

from funcnet.layers.activations import (
    ACTIVATIONS,
    Elu,
    Gelu,
    LeakyRelu,
    LogSoftmax,
    Relu,
    Sigmoid,
    Silu,
    Softmax,
    Tanh,
    elu,
    gelu,
    leaky_relu,
    log_softmax,
    relu,
    sigmoid,
    silu,
    softmax,
    tanh,
)
from funcnet.layers.dense import Dense
from funcnet.layers.dropout import Dropout
from funcnet.layers.reshape import Flatten, Identity, Reshape

#: Every layer constructor, by kind; the test registry must cover each one.
LAYERS = {
    layer.__name__: layer
    for layer in (Dense, Dropout, Flatten, Reshape, Identity,
                  Relu, LeakyRelu, Elu, Gelu, Silu, Sigmoid, Tanh, Softmax, LogSoftmax)
}

__all__ = [
    *LAYERS,
    "ACTIVATIONS",
    "relu", "leaky_relu", "elu", "gelu", "silu", "sigmoid", "tanh", "softmax", "log_softmax",
]
