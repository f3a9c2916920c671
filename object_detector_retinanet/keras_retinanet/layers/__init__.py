"""Custom Keras 3 layers of the detector graphs (§5.2, §5.3, §5.6, §5.7).

Every layer is registered with ``keras.saving.register_keras_serializable(package="sku110k")``, so
importing this package is all a ``.keras`` load needs.
"""

from object_detector_retinanet.keras_retinanet.layers.anchors import Anchors
from object_detector_retinanet.keras_retinanet.layers.boxes import ClipBoxes, RegressBoxes
from object_detector_retinanet.keras_retinanet.layers.filter_detections import FilterDetections
from object_detector_retinanet.keras_retinanet.layers.upsample import UpsampleLike

__all__ = ["Anchors", "ClipBoxes", "FilterDetections", "RegressBoxes", "UpsampleLike"]
