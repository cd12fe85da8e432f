"""``cnnkit.Sequential``: the layer stack of :mod:`cnnkit.layers` plus Keras' workflow.

model = cnnkit.Sequential([Conv2D(32, 3, activation="relu"), ...], input_shape=(3, 32, 32))
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(x, y, epochs=3, validation_split=0.3)
"""

from __future__ import annotations

from cnnkit.layers.sequential import Sequential as _LayerStack
from cnnkit.train.model import Workflow


class Sequential(Workflow, _LayerStack):
    """A :class:`cnnkit.layers.Sequential` that can ``compile``, ``fit``, ``evaluate``
    and ``predict``; still a plain ``nn.Sequential`` (``model[0]``, ``state_dict``)."""
