"""Run by test_distribute.py in a fresh process: one step under MirroredStrategy on 2 logical CPUs.

Prints a JSON line with the single-device and mirrored losses and the largest weight difference
after one SGD step, for the same batch of two identical images.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from object_detector_retinanet.keras_retinanet import config, losses  # noqa: E402
from object_detector_retinanet.keras_retinanet.models.retinanet import build_retinanet  # noqa: E402
from object_detector_retinanet.keras_retinanet.utils.anchors import (  # noqa: E402
    anchors_for_shape,
    stage1_targets,
)


def build():
    keras.utils.set_random_seed(0)
    model = build_retinanet(num_classes=1, freeze_bn=True)
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=1e-3),
        loss={config.REGRESSION: losses.smooth_l1(), config.CLASSIFICATION: losses.focal()},
    )
    return model


rng = np.random.default_rng(0)
image = rng.normal(0, 30, (96, 96, 3)).astype("float32")
boxes = np.array([[10, 12, 50, 60], [50, 12, 90, 60], [20, 60, 60, 94]], "float64")
annotations = {"bboxes": boxes, "labels": np.zeros(3, "int64")}
images = np.stack([image, image])
targets = stage1_targets(anchors_for_shape((96, 96)), [image, image], [annotations] * 2, 1)

single = build()
initial_weights = single.get_weights()
single_loss = single.test_on_batch(images, targets)[0]
single.train_on_batch(images, targets)
single_weights = single.get_weights()

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    mirrored = build()
mirrored_loss = mirrored.test_on_batch(images, targets)[0]
mirrored.train_on_batch(images, targets)
moved = max(float(np.abs(a - b).max()) for a, b in zip(initial_weights, single_weights))
diff = max(float(np.abs(a - b).max()) for a, b in zip(single_weights, mirrored.get_weights()))
json.dump(
    {
        "replicas": strategy.num_replicas_in_sync,
        "single": float(single_loss),
        "mirrored": float(mirrored_loss),
        "max_weight_diff": diff,
        "max_step": moved,
    },
    sys.stdout,
)
print()
