"""The layer catalogue. Constructors are CamelCase and return a :class:`funcnet.Layer`."""

from funcnet.layers._lowering import set_lowering
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
from funcnet.layers.attention import MultiHeadAttention
from funcnet.layers.bidirectional import Bidirectional
from funcnet.layers.conv import (
    Conv1D,
    Conv2D,
    Conv3D,
    ConvTranspose1D,
    ConvTranspose2D,
    ConvTranspose3D,
)
from funcnet.layers.dense import Dense
from funcnet.layers.dropout import Dropout
from funcnet.layers.embedding import Embedding
from funcnet.layers.normalization import BatchNorm, GroupNorm, LayerNorm, RMSNorm
from funcnet.layers.pooling import (
    AvgPool1D,
    AvgPool2D,
    AvgPool3D,
    GlobalAvgPool,
    GlobalMaxPool,
    MaxPool1D,
    MaxPool2D,
    MaxPool3D,
)
from funcnet.layers.positional import PositionalEmbedding, SinusoidalEncoding
from funcnet.layers.recurrent import GRU, LSTM, RNN, SimpleRNN
from funcnet.layers.recurrent_cells import GRUCell, LSTMCell, SimpleRNNCell
from funcnet.layers.reshape import Flatten, Identity, Reshape
from funcnet.layers.transformer import TransformerDecoderBlock, TransformerEncoderBlock

#: Every layer constructor, by kind; the test registry must cover each one.
LAYERS = {
    layer.__name__: layer
    for layer in (Dense, Dropout, Flatten, Reshape, Identity,
                  Relu, LeakyRelu, Elu, Gelu, Silu, Sigmoid, Tanh, Softmax, LogSoftmax,
                  Conv1D, Conv2D, Conv3D, ConvTranspose1D, ConvTranspose2D, ConvTranspose3D,
                  MaxPool1D, MaxPool2D, MaxPool3D, AvgPool1D, AvgPool2D, AvgPool3D,
                  GlobalAvgPool, GlobalMaxPool,
                  BatchNorm, LayerNorm, GroupNorm, Embedding,
                  RNN, SimpleRNN, GRU, LSTM, Bidirectional,
                  RMSNorm, MultiHeadAttention, PositionalEmbedding, SinusoidalEncoding,
                  TransformerEncoderBlock, TransformerDecoderBlock)
}

__all__ = [  # noqa: PLE0604 (LAYERS holds the layer constructors' names)
    *LAYERS,
    "ACTIVATIONS",
    "set_lowering",
    "SimpleRNNCell", "GRUCell", "LSTMCell",
    "relu", "leaky_relu", "elu", "gelu", "silu", "sigmoid", "tanh", "softmax", "log_softmax",
]
