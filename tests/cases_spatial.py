"""Registry cases for convolutions, pooling, normalisation and embedding (see layer_cases.py).

Inputs are tiny: each case runs through every check in test_layers.py.
"""

from __future__ import annotations

from functools import partial as p

import numpy as np

import funcnet as fn
from tests import references as ref
from tests.layer_cases import LayerCase

CONV = [
    LayerCase("conv1d_valid_stride2_dilated", lambda: fn.Conv1D(3, 3, strides=2, dilation=2), (2, 9, 2),
              p(ref.conv, strides=2, dilation=2)),
    LayerCase("conv2d_same_rect_strides_tanh",
              lambda: fn.Conv2D(3, (3, 2), strides=(2, 1), padding="same", activation="tanh"), (2, 5, 4, 2),
              lambda *a: np.tanh(ref.conv(*a, strides=(2, 1), padding="SAME"))),
    LayerCase("conv2d_explicit_groups_no_bias",
              lambda: fn.Conv2D(4, 2, groups=2, use_bias=False, padding=((1, 0), (2, 1))), (2, 3, 4, 4),
              p(ref.conv, groups=2, padding=((1, 0), (2, 1)))),
    LayerCase("conv3d_same", lambda: fn.Conv3D(2, 2, strides=(1, 2, 1), padding="SAME"), (2, 3, 4, 2, 2),
              p(ref.conv, strides=(1, 2, 1), padding="SAME")),
]

CONV_TRANSPOSE = [
    LayerCase("conv_transpose1d_valid_kernel_below_stride", lambda: fn.ConvTranspose1D(2, 2, strides=3),
              (2, 3, 2), p(ref.conv_transpose, strides=3)),
    LayerCase("conv_transpose2d_same", lambda: fn.ConvTranspose2D(2, (3, 4), strides=2, padding="SAME"),
              (2, 3, 2, 2), p(ref.conv_transpose, strides=2, padding="SAME")),
    LayerCase("conv_transpose2d_dilated_explicit_no_bias",
              lambda: fn.ConvTranspose2D(2, 2, dilation=2, padding=((1, 2), (0, 1)), use_bias=False),
              (2, 3, 3, 2), p(ref.conv_transpose, dilation=2, padding=((1, 2), (0, 1)))),
    LayerCase("conv_transpose3d_valid", lambda: fn.ConvTranspose3D(2, (3, 2, 2), strides=(2, 1, 2)),
              (2, 2, 2, 3, 2), p(ref.conv_transpose, strides=(2, 1, 2))),
]

POOLING = [
    LayerCase("max_pool1d_ragged", lambda: fn.MaxPool1D(2), (2, 7, 2), p(ref.pool, pool_size=2)),
    LayerCase("max_pool2d_same_stride2", lambda: fn.MaxPool2D(3, strides=2, padding="SAME"), (2, 5, 4, 2),
              p(ref.pool, pool_size=3, strides=2, padding="SAME")),
    LayerCase("max_pool3d", lambda: fn.MaxPool3D((2, 2, 1)), (2, 2, 4, 3, 2), p(ref.pool, pool_size=(2, 2, 1))),
    LayerCase("avg_pool1d_valid_overlapping", lambda: fn.AvgPool1D(3, strides=1), (2, 5, 2),
              p(ref.pool, pool_size=3, strides=1, average=True)),
    LayerCase("avg_pool2d_same_borders", lambda: fn.AvgPool2D(3, strides=(2, 1), padding="same"), (2, 5, 4, 2),
              p(ref.pool, pool_size=3, strides=(2, 1), padding="SAME", average=True)),
    LayerCase("avg_pool3d_same", lambda: fn.AvgPool3D(2, padding="SAME"), (2, 3, 3, 2, 1),
              p(ref.pool, pool_size=2, padding="SAME", average=True)),
    LayerCase("global_avg_pool_2d", lambda: fn.GlobalAvgPool(), (2, 3, 4, 3),
              lambda _p, _s, x: x.mean(axis=(1, 2))),
    LayerCase("global_max_pool_1d", lambda: fn.GlobalMaxPool(), (2, 5, 3), lambda _p, _s, x: x.max(axis=1)),
]

NORMALIZATION = [
    LayerCase("batch_norm_images", lambda: fn.BatchNorm(), (4, 2, 3, 2), ref.batch_norm,
              train_reference=ref.batch_norm_train),
    LayerCase("batch_norm_features_momentum_no_affine",
              lambda: fn.BatchNorm(momentum=0.5, epsilon=0.1, use_scale=False, use_bias=False), (5, 3),
              p(ref.batch_norm, epsilon=0.1), train_reference=p(ref.batch_norm_train, momentum=0.5, epsilon=0.1)),
    LayerCase("layer_norm_no_bias", lambda: fn.LayerNorm(epsilon=0.01, use_bias=False), (2, 3, 5),
              p(ref.layer_norm, epsilon=0.01)),
    LayerCase("group_norm_images", lambda: fn.GroupNorm(3, epsilon=0.1), (2, 2, 3, 6),
              p(ref.group_norm, groups=3, epsilon=0.1)),
]

EMBEDDING = [
    LayerCase("embedding_sequences", lambda: fn.Embedding(7, 3), (2, 4), ref.embedding, int_input=7),
]

SPATIAL: list[LayerCase] = [*CONV, *CONV_TRANSPOSE, *POOLING, *NORMALIZATION, *EMBEDDING]
