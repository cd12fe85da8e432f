"""LeNet-5 (LeCun, Bottou, Bengio and Haffner, "Gradient-based learning applied to
document recognition", Proc. IEEE 86(11), 1998), for 32x32 single-channel digits.

Two variants of the same 7-layer stack (seed 001's table: C1 6@28x28, S2 6@14x14,
C3 16@10x10, S4 16@5x5, C5 120@1x1, F6 84, output 10):

* ``lenet5()`` (``variant='classic'``): the textbook modernisation the decks draw (seed
  003: "two CNN layers followed by max-pooling, a hidden dense and a softmax layer"):
  ReLU, 2x2 max pooling, full C3, a linear 10-way output (logits). 61,706 parameters.
* ``lenet5(variant='original')``: the 1998 network: the scaled tanh
  ``1.7159 tanh(2/3 a)``, trainable subsampling (sum of 2x2, times a learnt coefficient,
  plus a learnt bias, per map), C3's partial connection table (Table I), and Euclidean
  RBF output units. 60,000 trainable parameters, the paper's figure.

How the 60,000 are counted (``requires_grad`` parameters; every one is a free
parameter, no masked zeros)::

    C1  6 maps x (5*5*1 weights + 1 bias)                       =    156
    S2  6 maps x (1 coefficient + 1 bias)                       =     12
    C3  60 connections of Table I x 5*5 weights + 16 biases     =  1,516
    S4  16 maps x (1 coefficient + 1 bias)                      =     32
    C5  120 maps x (5*5*16 weights + 1 bias)                    = 48,120
    F6  84 units x (120 weights + 1 bias)                       = 10,164
                                                         total  = 60,000

The RBF centres (10 x 84 = 840 numbers) were "chosen by hand and kept fixed" in the
paper, so by default they are a buffer, not a parameter; ``trainable_centres=True``
makes them a parameter (60,840 trainable parameters then).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnkit._core.errors import ConfigError, ShapeError
from cnnkit.layers import AveragePooling2D, Conv2D, Dense, Flatten, MaxPooling2D
from cnnkit.layers.base import Layer, get_activation
from cnnkit.models.base import ImageClassifier
from cnnkit.models.registry import register_model

__all__ = [
    "C3_CONNECTIONS",
    "ConnectionTableConv2D",
    "EuclideanRBF",
    "TrainableSubsampling2D",
    "lenet5",
    "scaled_tanh",
]

#: LeCun et al. 1998, Table I: the S2 maps (0-5) each C3 map (0-15) reads
C3_CONNECTIONS: tuple[tuple[int, ...], ...] = (
    (0, 1, 2),
    (1, 2, 3),
    (2, 3, 4),
    (3, 4, 5),
    (0, 4, 5),
    (0, 1, 5),
    (0, 1, 2, 3),
    (1, 2, 3, 4),
    (2, 3, 4, 5),
    (0, 3, 4, 5),
    (0, 1, 4, 5),
    (0, 1, 2, 5),
    (0, 1, 3, 4),
    (1, 2, 4, 5),
    (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)

# 7x12 bitmaps of the digits ('#' = +1, '.' = -1), drawn in the spirit of the paper's
# Fig. 3 (the paper shows its stylised ASCII bitmaps as a picture, not as numbers).
_DIGIT_BITMAPS = (
    ".......|..###..|.#...#.|#.....#|#.....#|#.....#|#.....#|#.....#|#.....#|.#...#.|..###..|.......",
    ".......|...#...|..##...|.#.#...|...#...|...#...|...#...|...#...|...#...|...#...|.#####.|.......",
    ".......|..###..|.#...#.|.....#.|.....#.|....#..|...#...|..#....|.#.....|#......|#######|.......",
    ".......|.####..|#....#.|.....#.|.....#.|..###..|.....#.|.....#.|.....#.|#....#.|.####..|.......",
    ".......|....#..|...##..|..#.#..|.#..#..|#...#..|#######|....#..|....#..|....#..|....#..|.......",
    ".......|#######|#......|#......|#......|#####..|.....#.|......#|......#|#....#.|.####..|.......",
    ".......|..###..|.#.....|#......|#......|#.###..|##...#.|#.....#|#.....#|.#...#.|..###..|.......",
    ".......|#######|......#|.....#.|....#..|....#..|...#...|...#...|..#....|..#....|..#....|.......",
    ".......|..###..|.#...#.|.#...#.|.#...#.|..###..|.#...#.|#.....#|#.....#|.#...#.|..###..|.......",
    ".......|..###..|.#...#.|#.....#|#.....#|.#...##|..###.#|......#|......#|.....#.|..###..|.......",
)

_A, _S = 1.7159, 2.0 / 3.0


def scaled_tanh(x: torch.Tensor) -> torch.Tensor:
    """LeCun's squashing function ``f(a) = 1.7159 tanh(2/3 a)`` (1998, Appendix A):
    ``f(1) = 1`` and ``f(-1) = -1``, with the maximal second derivative at +-1."""
    return _A * torch.tanh(_S * x)


def _uniform_24_over_fan_in(weight: torch.Tensor) -> None:
    """The paper's initialisation (Appendix C): uniform in ``[-2.4 / F_i, 2.4 / F_i]``,
    ``F_i`` the fan-in of the unit."""
    fan_in = math.prod(weight.shape[1:]) if weight.dim() > 1 else 1
    bound = 2.4 / fan_in
    with torch.no_grad():
        weight.uniform_(-bound, bound)


def rbf_centres(num_classes: int, features: int = 84) -> torch.Tensor:
    """``Tensor[num_classes, features]`` of +-1: the 7x12 digit bitmaps for 10 classes and
    84 features; otherwise +-1 codes drawn from a generator seeded with 0 (fixed)."""
    if num_classes == 10 and features == 84:
        rows = [[1.0 if ch == "#" else -1.0 for ch in bm.replace("|", "")] for bm in _DIGIT_BITMAPS]
        return torch.tensor(rows)
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 2, (num_classes, features), generator=gen).float() * 2 - 1


class TrainableSubsampling2D(Layer):
    """LeNet-5's S2/S4: per map, the sum of each non-overlapping 2x2 window times a
    learnt coefficient plus a learnt bias, then ``activation``.

    ``y[n, c] = act(weight[c] * sum_{2x2}(x[n, c]) + bias[c])``. Two parameters per map.

    Shapes: ``x (Tensor[N, C, H, W])`` -> ``Tensor[N, C, H // 2, W // 2]``.
    """

    spatial_dims = 2

    def __init__(
        self,
        pool_size: int = 2,
        activation: Any = None,
        *,
        in_channels: int | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        self.pool = AveragePooling2D(pool_size)
        self.area = math.prod(self.pool.pool_size)
        self.activation = activation
        _, self._act = get_activation(activation)
        self.weight: nn.Parameter | None = None
        self.bias: nn.Parameter | None = None
        if in_channels is not None:
            self.build((None, in_channels, None, None))

    def _build(self, input_shape: tuple) -> None:
        c = int(input_shape[1])
        self.weight = nn.Parameter(torch.empty(c))
        self.bias = nn.Parameter(torch.zeros(c))
        bound = 2.4 / self.area
        with torch.no_grad():
            self.weight.uniform_(-bound, bound)

    def call(self, x: torch.Tensor) -> torch.Tensor:
        view = (1, -1, 1, 1)
        y = self.pool(x) * self.area * self.weight.view(view) + self.bias.view(view)
        return y if self._act is None or self.emit_logits else self._act(y)

    def _output_shape(self, input_shape: tuple) -> tuple:
        return self.pool.compute_output_shape(input_shape)

    def count_macs(self, input_shape: Sequence[int | None]) -> int:
        """``area`` inputs per output unit (the shared coefficient), bias excluded as
        for convolutions."""
        shape, _ = self._with_batch(input_shape)
        out = self._output_shape(shape)
        return int(out[1]) * math.prod(int(s) for s in out[2:]) * self.area

    def receptive_field_layers(self) -> list:
        return self.pool.receptive_field_layers()


class ConnectionTableConv2D(Layer):
    """A convolution in which output map ``j`` reads only the input maps ``table[j]``
    (LeNet-5's C3, Table I), with exactly one learnt ``k x k`` kernel per connection.

    ``packed_weight (Tensor[n_connections, k, k])`` holds the kernels in table order;
    ``dense_weight`` scatters them into the ``Tensor[filters, C_in, k, k]`` kernel of an
    ordinary convolution (zeros where there is no connection), which ``F.conv2d`` runs.
    Valid padding, stride 1.

    Shapes: ``x (Tensor[N, C_in, H, W])`` -> ``Tensor[N, len(table), H - k + 1, W - k + 1]``.
    """

    spatial_dims = 2

    def __init__(
        self,
        table: Sequence[Sequence[int]],
        kernel_size: int = 5,
        activation: Any = None,
        *,
        in_channels: int | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        if not table or any(not row for row in table):
            raise ConfigError(
                f"ConnectionTableConv2D expects a non-empty table with at least one input per "
                f"output map; received {table!r}."
            )
        self.table = tuple(tuple(int(i) for i in row) for row in table)
        self.filters = len(self.table)
        self.kernel_size = (int(kernel_size), int(kernel_size))
        self.activation = activation
        _, self._act = get_activation(activation)
        out_idx = [j for j, row in enumerate(self.table) for _ in row]
        in_idx = [i for row in self.table for i in row]
        self.register_buffer("out_index", torch.tensor(out_idx, dtype=torch.long))
        self.register_buffer("in_index", torch.tensor(in_idx, dtype=torch.long))
        self.packed_weight: nn.Parameter | None = None
        self.bias: nn.Parameter | None = None
        if in_channels is not None:
            self.build((None, in_channels, None, None))

    def _build(self, input_shape: tuple) -> None:
        c_in = int(input_shape[1])
        if max(max(row) for row in self.table) >= c_in:
            raise ShapeError(
                f"ConnectionTableConv2D's table reads input map {max(max(r) for r in self.table)}"
                f" but the input has {c_in} channels."
            )
        k = self.kernel_size
        self.packed_weight = nn.Parameter(torch.empty(len(self.in_index), *k))
        self.bias = nn.Parameter(torch.zeros(self.filters))
        with torch.no_grad():  # uniform +-2.4 / fan-in, the fan-in of each output map
            fan_in = torch.tensor([len(self.table[j]) * k[0] * k[1] for j in self.out_index])
            bound = (2.4 / fan_in.float()).view(-1, 1, 1)
            self.packed_weight.uniform_(-1.0, 1.0)
            self.packed_weight.mul_(bound.to(self.packed_weight.device))

    @property
    def dense_weight(self) -> torch.Tensor:
        """The equivalent full kernel ``Tensor[filters, C_in, k, k]`` (zeros off-table)."""
        w = self.packed_weight
        full = w.new_zeros(self.filters, self.in_channels, *self.kernel_size)
        return full.index_put((self.out_index, self.in_index), w)

    def call(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(x, self.dense_weight, self.bias)
        return y if self._act is None or self.emit_logits else self._act(y)

    def _output_shape(self, input_shape: tuple) -> tuple:
        k = self.kernel_size
        spatial = []
        for n, kk in zip(input_shape[2:], k):
            if n is not None and n < kk:
                raise ShapeError(
                    f"ConnectionTableConv2D with a {kk}x{kk} kernel cannot take spatial size "
                    f"{n} (input shape {tuple(input_shape)})."
                )
            spatial.append(None if n is None else n - kk + 1)
        return (input_shape[0], self.filters, *spatial)

    def count_macs(self, input_shape: Sequence[int | None]) -> int:
        """Connections only: ``n_connections * k * k`` per output position."""
        shape, _ = self._with_batch(input_shape)
        out = self._output_shape(shape)
        return len(self.in_index) * math.prod(self.kernel_size) * math.prod(out[2:])

    def receptive_field_layers(self) -> list:
        return [(self.kernel_size, (1, 1), (1, 1))]


class EuclideanRBF(Layer):
    """LeNet-5's output layer: one Euclidean radial basis function unit per class,
    ``y_i = sum_j (x_j - w_ij)^2`` (eq. 7), returned as ``-y_i`` so that larger means
    more likely; softmax cross-entropy on these scores is the paper's discriminative
    criterion (eq. 9) without its constant ``e^{-j}`` rejection class.

    Args:
        centres: ``Tensor[num_classes, features]`` (the +-1 bitmaps).
        trainable: learn the centres (the paper keeps them fixed; then they are a buffer).

    Shapes: ``x (Tensor[N, features])`` -> ``Tensor[N, num_classes]``.
    """

    spatial_dims = None

    def __init__(self, centres: torch.Tensor, trainable: bool = False, *, name: str | None = None):
        super().__init__(name=name)
        centres = torch.as_tensor(centres, dtype=torch.float32)
        if centres.dim() != 2:
            raise ConfigError(
                f"EuclideanRBF expects centres of shape (num_classes, features); received "
                f"{tuple(centres.shape)}."
            )
        self.trainable = bool(trainable)
        if self.trainable:
            self.centres = nn.Parameter(centres.clone())
        else:
            self.register_buffer("centres", centres.clone())
        self.built = True

    def call(self, x: torch.Tensor) -> torch.Tensor:
        return -((x.unsqueeze(1) - self.centres.unsqueeze(0)) ** 2).sum(-1)

    def _output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], self.centres.shape[0])

    def count_macs(self, input_shape: Sequence[int | None]) -> int:
        return int(self.centres.numel())

    def receptive_field_layers(self) -> None:
        return None


def _classic(num_classes: int, in_channels: int) -> ImageClassifier:
    stages = [
        ("c1", Conv2D(6, 5, activation="relu", in_channels=in_channels)),
        ("s2", MaxPooling2D(2)),
        ("c3", Conv2D(16, 5, activation="relu", in_channels=6)),
        ("s4", MaxPooling2D(2)),
        ("c5", Conv2D(120, 5, activation="relu", in_channels=16)),
    ]
    head = nn.Sequential(
        Flatten(), Dense(84, activation="relu", in_features=120), Dense(num_classes, in_features=84)
    )
    return ImageClassifier(stages, head, (in_channels, 32, 32))


def _original(num_classes: int, in_channels: int, trainable_centres: bool) -> ImageClassifier:
    init = _uniform_24_over_fan_in
    if in_channels == 1:
        table = C3_CONNECTIONS
    else:
        raise ConfigError(
            f"lenet5(variant='original') has C3's connection table for the paper's single "
            f"input plane; received in_channels={in_channels}. Use variant='classic' for "
            "other inputs."
        )
    conv = dict(activation=scaled_tanh, kernel_initializer=init)
    stages = [
        ("c1", Conv2D(6, 5, in_channels=in_channels, **conv)),
        ("s2", TrainableSubsampling2D(2, scaled_tanh, in_channels=6)),
        ("c3", ConnectionTableConv2D(table, 5, scaled_tanh, in_channels=6)),
        ("s4", TrainableSubsampling2D(2, scaled_tanh, in_channels=16)),
        ("c5", Conv2D(120, 5, in_channels=16, **conv)),
    ]
    head = nn.Sequential(
        Flatten(),
        Dense(84, in_features=120, **conv),
        EuclideanRBF(rbf_centres(num_classes), trainable=trainable_centres),
    )
    return ImageClassifier(stages, head, (in_channels, 32, 32))


@register_model("lenet5")
def lenet5(
    num_classes: int = 10,
    in_channels: int = 1,
    variant: str = "classic",
    trainable_centres: bool = False,
) -> ImageClassifier:
    """LeNet-5 (LeCun et al. 1998) for ``x (Tensor[N, in_channels, 32, 32])`` (MNIST's
    28x28 digits padded to 32x32, as in the paper) -> ``Tensor[N, num_classes]``.

    ``variant='classic'``: ReLU, max pooling, linear output (logits); 61,706 parameters
    for 10 classes. ``variant='original'``: the paper's network (see the module
    docstring): scaled tanh, trainable subsampling, Table I, RBF output (scores
    ``-||x - c_i||^2``); 60,000 trainable parameters, plus the 840 fixed centres unless
    ``trainable_centres``. The paper normalises the input so that the background is
    -0.1 and the foreground 1.175.

    Stages ``c1, s2, c3, s4, c5`` (C5 is the last convolution; its maps are 1x1).
    """
    if variant == "classic":
        if trainable_centres:
            raise ConfigError(
                "trainable_centres applies to lenet5(variant='original') (the RBF output); "
                "the classic variant has a linear output."
            )
        model = _classic(num_classes, in_channels)
    elif variant == "original":
        model = _original(num_classes, in_channels, trainable_centres)
    else:
        raise ConfigError(f"lenet5 variant must be 'classic' or 'original'; received {variant!r}.")
    model.name = "lenet5" if variant == "classic" else "lenet5_original"
    return model
