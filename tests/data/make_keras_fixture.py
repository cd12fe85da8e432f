"""Write tests/data/keras_small.keras and keras_small_expected.npz with real Keras 3.

A small functional model (two branches merged by Concatenate and Add, batch norm with
non-trivial moving statistics, Flatten -> Dense, two heads) and Keras' own predictions
on a fixed input, so tests/test_keras_import.py checks ``cnnkit.from_keras`` without
Keras installed. Run from the repository root:

    KERAS_BACKEND=torch python tests/data/make_keras_fixture.py
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402

HERE = Path(__file__).resolve().parent


def build() -> keras.Model:
    keras.utils.set_random_seed(0)
    inp = keras.Input((10, 12, 3))
    a = layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    b = layers.SeparableConv2D(4, 3, strides=1, padding="same", depth_multiplier=2)(inp)
    c = layers.Concatenate()([a, b])
    d = layers.Add()([a, b])
    c = layers.BatchNormalization()(c)
    c = layers.MaxPooling2D(2)(c)
    d = layers.Conv2DTranspose(3, 2, strides=2, padding="same")(layers.MaxPooling2D(2)(d))
    d = layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2)(d)
    cls = layers.Dense(3, activation="softmax", name="cls")(layers.Flatten()(c))
    box = layers.Dense(4, name="box")(layers.GlobalAveragePooling2D()(d))
    return keras.Model(inp, [cls, box])


def main() -> None:
    model = build()
    rng = np.random.default_rng(0)
    for w in model.weights:  # every weight non-trivial, the moving variance positive
        v = rng.standard_normal(w.shape).astype("float32") * 0.3
        if w.path.endswith(("moving_variance", "gamma")):
            v = np.abs(v) + 0.5
        w.assign(v)
    x = rng.random((2, 10, 12, 3)).astype("float32")
    cls, box = model.predict(x, verbose=0)
    model.save(HERE / "keras_small.keras")
    np.savez(HERE / "keras_small_expected.npz", x=x, cls=cls, box=box)


if __name__ == "__main__":
    main()
