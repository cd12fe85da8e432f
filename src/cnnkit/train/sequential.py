"""``cnnkit.Sequential``: the layer stack of :mod:`cnnkit.layers` plus Keras' workflow.

model = cnnkit.Sequential([Conv2D(32, 3, activation="relu"), ...], input_shape=(3, 32, 32))
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(x, y, epochs=3, validation_split=0.3)
"""

from __future__ import annotations

from cnnkit.layers.base import register_layer
from cnnkit.layers.sequential import Sequential as _LayerStack
from cnnkit.train.model import Workflow
from cnnkit.train.rebuild import MODEL_CLASSES


class Sequential(Workflow, _LayerStack):
    """A :class:`cnnkit.layers.Sequential` that can ``compile``, ``fit``, ``evaluate``
    and ``predict``; still a plain ``nn.Sequential`` (``model[0]``, ``state_dict``)."""


# a saved cnnkit.Sequential (model.json's "class") and one nested in a saved config
# rebuild as one: both are table lookups, nothing is imported by name
MODEL_CLASSES[f"{__name__}.Sequential"] = Sequential
register_layer(Sequential)
