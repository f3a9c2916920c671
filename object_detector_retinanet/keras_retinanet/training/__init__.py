"""Training of both SKU-110K stages: the stages as data, the shared driver, distribution.

- :mod:`.stages`: :class:`Stage`, ``STAGE1`` (the base RetinaNet) and ``STAGE2`` (the Soft-IoU
  head), with their model builders, losses and target functions;
- :mod:`.driver`: :func:`train` (build, load, compile, fit) and its parts;
- :mod:`.callbacks`: the Keras callbacks :func:`train` adds (snapshots, the NaN/inf guard);
- :mod:`.distribute`: ``TF_CONFIG``, the chief, the tf.distribute strategy.

Importing this package does not import TensorFlow (only :mod:`.callbacks` does, at import).
"""

from object_detector_retinanet.keras_retinanet.training.driver import (
    create_generators,
    fixed_steps,
    make_optimizer,
    settle_batches,
    train,
)
from object_detector_retinanet.keras_retinanet.training.stages import (
    STAGE1,
    STAGE2,
    Stage,
    build_stage1,
    build_stage2,
)

__all__ = [
    "STAGE1",
    "STAGE2",
    "Stage",
    "build_stage1",
    "build_stage2",
    "create_generators",
    "fixed_steps",
    "make_optimizer",
    "settle_batches",
    "train",
]
