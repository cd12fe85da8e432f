"""Keras-named layers as ``torch.nn.Module``s on channels-first tensors.

One concept per file; every layer builds on first call (or eagerly through
``build``/``Sequential(input_shape=...)``) and has ``compute_output_shape``.
"""

from cnnkit.layers.base import LAYERS, Layer, register_layer
from cnnkit.layers.blocks import Inception, ResidualBlock
from cnnkit.layers.conv import Conv1D, Conv2D, Conv3D
from cnnkit.layers.core import Activation, Dense, Flatten, LeakyReLU, ReLU, Rescaling, Reshape
from cnnkit.layers.dropout import Dropout, SpatialDropout1D, SpatialDropout2D, SpatialDropout3D
from cnnkit.layers.global_pooling import (
    GlobalAveragePooling1D,
    GlobalAveragePooling2D,
    GlobalAveragePooling3D,
    GlobalMaxPooling1D,
    GlobalMaxPooling2D,
    GlobalMaxPooling3D,
)
from cnnkit.layers.graph import Graph
from cnnkit.layers.merge import (
    Add,
    Average,
    Concatenate,
    Maximum,
    Minimum,
    Multiply,
    Subtract,
)
from cnnkit.layers.normalization import BatchNormalization
from cnnkit.layers.pooling import (
    AveragePooling1D,
    AveragePooling2D,
    AveragePooling3D,
    MaxPooling1D,
    MaxPooling2D,
    MaxPooling3D,
    MinPooling1D,
    MinPooling2D,
    MinPooling3D,
)
from cnnkit.layers.reshaping import (
    Cropping1D,
    Cropping2D,
    Cropping3D,
    Permute,
    ZeroPadding1D,
    ZeroPadding2D,
    ZeroPadding3D,
)
from cnnkit.layers.separable import (
    DepthwiseConv1D,
    DepthwiseConv2D,
    DepthwiseConv3D,
    SeparableConv1D,
    SeparableConv2D,
    SpatialSeparableConv2D,
)
from cnnkit.layers.sequential import Sequential
from cnnkit.layers.summary import SummaryRow, summary
from cnnkit.layers.transposed import Conv1DTranspose, Conv2DTranspose, Conv3DTranspose
from cnnkit.layers.unpooling import MaxUnpooling1D, MaxUnpooling2D, MaxUnpooling3D
from cnnkit.layers.upsampling import UpSampling1D, UpSampling2D, UpSampling3D

#: the layers a saved config may name (``Sequential.from_config``, ``cnnkit.load``): an
#: explicit table (``Sequential`` enters it in its own module); a name read from a file is
#: looked up here, never imported. ``register_layer`` adds a layer of one's own.
for _layer in (
    Activation,
    Add,
    Average,
    AveragePooling1D,
    AveragePooling2D,
    AveragePooling3D,
    BatchNormalization,
    Concatenate,
    Conv1D,
    Conv1DTranspose,
    Conv2D,
    Conv2DTranspose,
    Conv3D,
    Conv3DTranspose,
    Cropping1D,
    Cropping2D,
    Cropping3D,
    Dense,
    DepthwiseConv1D,
    DepthwiseConv2D,
    DepthwiseConv3D,
    Dropout,
    Flatten,
    GlobalAveragePooling1D,
    GlobalAveragePooling2D,
    GlobalAveragePooling3D,
    GlobalMaxPooling1D,
    GlobalMaxPooling2D,
    GlobalMaxPooling3D,
    Inception,
    LeakyReLU,
    MaxPooling1D,
    MaxPooling2D,
    MaxPooling3D,
    MaxUnpooling1D,
    MaxUnpooling2D,
    MaxUnpooling3D,
    Maximum,
    MinPooling1D,
    MinPooling2D,
    MinPooling3D,
    Minimum,
    Multiply,
    Permute,
    ReLU,
    Rescaling,
    Reshape,
    ResidualBlock,
    SeparableConv1D,
    SeparableConv2D,
    SpatialDropout1D,
    SpatialDropout2D,
    SpatialDropout3D,
    SpatialSeparableConv2D,
    Subtract,
    UpSampling1D,
    UpSampling2D,
    UpSampling3D,
    ZeroPadding1D,
    ZeroPadding2D,
    ZeroPadding3D,
):
    register_layer(_layer)
del _layer
