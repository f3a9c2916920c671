"""Post-processing of raw detections: the paper's EM-Merger and a plain NMS baseline.

Goldman et al. (CVPR 2019), §4: the raw, heavily overlapping detections of a densely packed image
are turned into one detection per object. Modules, in reading (and import) order:

- :mod:`.arrays`: ragged-array helpers the steps share;
- :mod:`.heat_map`: detections as Gaussians, the heat map and its contours (the regions);
- :mod:`.mog`: collapsing a region's mixture of Gaussians (agglomerative init + hard EM);
- :mod:`.redundancy`: removing components whose ellipses overlap;
- :mod:`.selection`: which detection a resolved object keeps;
- :mod:`.em_merger`: the pipeline, :func:`merge_detections` and :func:`merge_many`;
- :mod:`.nms`: :func:`nms_merge`, the "& NMS" baseline with the same interface.

Settings: :class:`EmMergerConfig` (in ``config.py``). The story behind the merger's quirks and
fixes: docs/em-merger.md. Nothing here imports Keras or TensorFlow.
"""

from object_detector_retinanet.keras_retinanet.config import SELECTIONS, EmMergerConfig
from object_detector_retinanet.keras_retinanet.postprocess.em_merger import (
    merge_detections,
    merge_many,
)
from object_detector_retinanet.keras_retinanet.postprocess.nms import nms_merge

__all__ = ["SELECTIONS", "EmMergerConfig", "merge_detections", "merge_many", "nms_merge"]
