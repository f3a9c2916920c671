"""Weight initialisers of the detector heads (§5.4).

Owns :class:`PriorProbability`, the bias initialiser of the classification head's last
convolution (RetinaNet, Lin et al. 2017, §4.1 "Initialization"; kept by Goldman et al., CVPR 2019).
Starting every anchor at foreground probability ``p`` keeps the focal loss of the ~10^5 background
anchors from swamping the first training steps.
"""

import math

import keras

from object_detector_retinanet.keras_retinanet.config import LossConfig


@keras.saving.register_keras_serializable(package="sku110k")
class PriorProbability(keras.initializers.Initializer):
    """Constant initialiser ``-log((1 - p) / p)``, so that ``sigmoid(bias) == p``.

    With the default ``p = 0.01`` (§5.4, ``LossConfig.prior_probability``) every value is
    ``-log(99) ≈ -4.595``.

    Args:
        probability: the prior foreground probability ``p``, strictly between 0 and 1.
        **kwargs: accepted for config compatibility and ignored (Keras initialisers take none).
    """

    def __init__(self, probability=LossConfig.prior_probability, **kwargs):
        del kwargs  # keras.initializers.Initializer.__init__ takes no arguments
        super().__init__()
        probability = float(probability)
        if not 0.0 < probability < 1.0:
            raise ValueError(f"PriorProbability: probability must be in (0, 1), got {probability}")
        self.probability = probability

    def __call__(self, shape, dtype=None):
        value = -math.log((1.0 - self.probability) / self.probability)
        return keras.ops.full(shape, value, dtype=dtype or keras.config.floatx())

    def get_config(self):
        return {"probability": self.probability}
