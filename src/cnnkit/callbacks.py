"""``cnnkit.callbacks``: the callbacks and learning-rate schedules of ``fit``.

An alias of :mod:`cnnkit.train.callbacks`, so ``from cnnkit.callbacks import
EarlyStopping`` works as in Keras.
"""

from cnnkit.train.callbacks import *  # noqa: F403
from cnnkit.train.callbacks import __all__  # noqa: F401
