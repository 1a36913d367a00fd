"""Registry cases for the recurrent layers (see layer_cases.py), against tests/references_recurrent.py."""

from __future__ import annotations

from functools import partial as p

import numpy as np

import funcnet as fn
from tests import references_recurrent as ref
from tests.layer_cases import LayerCase

RECURRENT = [
    LayerCase("simple_rnn", lambda: fn.SimpleRNN(3), (2, 4, 3), p(ref.rnn, kind="simple")),
    LayerCase("simple_rnn_relu_sequences", lambda: fn.SimpleRNN(2, activation="relu", return_sequences=True),
              (3, 3, 2), p(ref.rnn, kind="simple", return_sequences=True, activation=lambda a: np.maximum(a, 0))),
    LayerCase("gru", lambda: fn.GRU(3), (2, 4, 2), p(ref.rnn, kind="gru")),
    LayerCase("gru_reset_before_reverse_sequences", lambda: fn.GRU(3, reset_after=False, reverse=True,
                                                                   return_sequences=True),
              (2, 4, 2), p(ref.rnn, kind="gru", reset_after=False, reverse=True, return_sequences=True)),
    LayerCase("lstm", lambda: fn.LSTM(3), (2, 4, 2), p(ref.rnn, kind="lstm")),
    LayerCase("lstm_reverse_unroll2_sequences", lambda: fn.LSTM(2, reverse=True, unroll=2, return_sequences=True),
              (2, 5, 3), p(ref.rnn, kind="lstm", reverse=True, return_sequences=True)),
    LayerCase("rnn_gru_cell", lambda: fn.RNN(fn.GRUCell(2)), (2, 3, 2), p(ref.rnn, kind="gru")),
    LayerCase("bidirectional_lstm_sequences", lambda: fn.Bidirectional(fn.LSTM(2, return_sequences=True)),
              (2, 4, 3), p(ref.bidirectional, kind="lstm", merge="concat", return_sequences=True)),
    LayerCase("bidirectional_gru_reset_before_ave", lambda: fn.Bidirectional(fn.GRU(3, reset_after=False), merge="ave"),
              (2, 4, 2), p(ref.bidirectional, kind="gru", merge="ave", reset_after=False)),
]
