"""Score filtering, optional NMS and top-k of the inference graph (§5.7 step 4; B16, B17).

Owns :class:`FilterDetections` (layer ``filtered_detections`` of ``retinanet_bbox``). It calls
TensorFlow directly (``tf.image.non_max_suppression``, ``tf.map_fn``, batched ``tf.gather``), so it
requires ``KERAS_BACKEND=tensorflow``.

For SKU-110K the graph runs with ``nms=False``: every anchor whose hard score exceeds the threshold
reaches ``predict``, and the EM-Merger (paper §3.2) does the de-duplication.
"""

import keras
import tensorflow as tf

from object_detector_retinanet.keras_retinanet.config import PredictConfig

_DEFAULT_NMS_THRESHOLD = 0.5  # the original's FilterDetections default (unused by SKU-110K)
_DEFAULT_PARALLEL_ITERATIONS = 32  # tf.map_fn parallelism of the per-image NMS


def _nms_keep_mask(boxes, classification, candidates, nms_threshold, parallel_iterations):
    """Per-image, per-class NMS over the candidates.

    Args:
        boxes: ``(B, N, 4)`` boxes ``(x1, y1, x2, y2)``.
        classification: ``(B, N, C)`` scores.
        candidates: ``(B, N, C)`` bool, the scores above the threshold.
        nms_threshold: IoU at which TF's greedy NMS suppresses a box.
        parallel_iterations: ``tf.map_fn`` parallelism.

    Returns:
        ``(B, N, C)`` bool: the candidates that survive their class's NMS.
    """
    num_classes = classification.shape[-1]

    def one_image(args):
        image_boxes, image_scores, image_candidates = args  # (N, 4), (N, C), (N, C)
        num_anchors = tf.shape(image_boxes)[0]
        masks = []
        for c in range(num_classes):
            indices = tf.where(image_candidates[:, c])[:, 0]  # ascending anchor indices
            selected = tf.image.non_max_suppression(
                tf.gather(image_boxes, indices),
                tf.gather(image_scores[:, c], indices),
                max_output_size=tf.shape(indices)[0],  # no cap here; top-k caps below
                iou_threshold=nms_threshold,
            )
            kept = tf.gather(indices, selected)
            shape = tf.cast(num_anchors, tf.int64)[None]
            masks.append(tf.scatter_nd(kept[:, None], tf.ones_like(kept, dtype=tf.bool), shape))
        return tf.stack(masks, axis=1)

    return tf.map_fn(
        one_image,
        (boxes, classification, candidates),
        fn_output_signature=tf.TensorSpec((None, num_classes), tf.bool),
        parallel_iterations=parallel_iterations,
    )


@keras.saving.register_keras_serializable(package="sku110k")
class FilterDetections(keras.layers.Layer):
    """Keep the detections above a score threshold, best first, padded with −1 to a fixed count.

    Inputs: ``[boxes (B, N, 4), classification (B, N, C), *others]`` where each of ``others`` is
    ``(B, N, ...)`` (e.g. the soft-IoU scores ``(B, N, C)``).

    Outputs: ``[boxes (B, K, 4), scores (B, K), labels (B, K) int32, *others (B, K, ...)]``:

    1. for each class c, the anchors with ``score > score_threshold`` (strict, §5.7);
    2. if ``nms``, TF's greedy NMS at ``nms_threshold`` within each class;
    3. all (anchor, class) survivors sorted by score, descending (ties: lower class, then lower
       anchor index first, as the original's concatenate + ``top_k``), at most K of them;
    4. boxes and ``others`` gathered per anchor; rows past the survivors are −1 (labels too).

    B16: the original hard-coded ``max_detections = 999999`` and padded every image to 999,999 rows.
    Here ``K = max_detections`` when given, else ``N * C`` (the anchor count for SKU-110K's single
    class), so every anchor above the threshold still reaches ``predict`` without the waste.
    B17: ``score_threshold`` is honoured (the original ignored it and used 0.1).

    Requires ``KERAS_BACKEND=tensorflow``.

    Args:
        nms: whether to run per-class NMS (False for SKU-110K; the EM-Merger replaces it).
        score_threshold: keep scores strictly above this (``PredictConfig.score_threshold``, 0.1).
        nms_threshold: IoU threshold of the optional NMS (0.5).
        max_detections: K, or None for ``N * C`` (B16).
        parallel_iterations: ``tf.map_fn`` parallelism of the per-image NMS.
        **kwargs: standard ``keras.layers.Layer`` arguments; ``dtype`` defaults to float32.
    """

    def __init__(
        self,
        nms=False,
        score_threshold=PredictConfig.score_threshold,
        nms_threshold=_DEFAULT_NMS_THRESHOLD,
        max_detections=None,
        parallel_iterations=_DEFAULT_PARALLEL_ITERATIONS,
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")  # boxes in pixels and scores: never float16
        super().__init__(**kwargs)
        if max_detections is not None and int(max_detections) < 1:
            raise ValueError(f"FilterDetections: max_detections must be >= 1, got {max_detections}")
        self.nms = bool(nms)
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.max_detections = None if max_detections is None else int(max_detections)
        self.parallel_iterations = int(parallel_iterations)

    def call(self, inputs):
        boxes, classification, *others = inputs
        num_classes = classification.shape[-1]
        if num_classes is None:
            raise ValueError("FilterDetections: the number of classes (last axis) must be static")
        num_anchors = tf.shape(classification)[1]
        num_candidates = num_anchors * num_classes

        candidates = classification > tf.cast(self.score_threshold, classification.dtype)
        if self.nms:
            candidates = _nms_keep_mask(
                boxes, classification, candidates, self.nms_threshold, self.parallel_iterations
            )

        # Flatten class-major, (B, C * N), so ties resolve like the original's per-class concat.
        flat_scores = tf.reshape(tf.transpose(classification, (0, 2, 1)), (tf.shape(boxes)[0], -1))
        flat_keep = tf.reshape(tf.transpose(candidates, (0, 2, 1)), tf.shape(flat_scores))
        masked = tf.where(flat_keep, flat_scores, tf.cast(-float("inf"), flat_scores.dtype))

        if self.max_detections is None:
            num_outputs = num_candidates  # B16: K = N * C (= N for one class)
            k = num_candidates
        else:
            num_outputs = self.max_detections
            k = tf.minimum(num_candidates, self.max_detections)
        top_scores, top_indices = tf.math.top_k(masked, k=k, sorted=True)  # (B, k)
        valid = top_scores > -float("inf")  # fewer survivors than k: the rest were masked
        anchor_indices = top_indices % num_anchors
        labels = top_indices // num_anchors

        pad = num_outputs - k

        def finish(values, fill):
            """Set invalid rows to ``fill`` and pad axis 1 from k to K with ``fill``."""
            trailing = values.shape.rank - 2
            mask = tf.reshape(valid, tf.concat([tf.shape(valid), tf.ones([trailing], tf.int32)], 0))
            values = tf.where(mask, values, tf.cast(fill, values.dtype))
            paddings = tf.concat([[[0, 0], [0, pad]], tf.zeros([trailing, 2], tf.int32)], axis=0)
            values = tf.pad(values, paddings, constant_values=tf.cast(fill, values.dtype))
            if self.max_detections is not None:
                values = tf.ensure_shape(
                    values, [None, self.max_detections] + values.shape.as_list()[2:]
                )
            return values

        outputs = [
            finish(tf.gather(boxes, anchor_indices, batch_dims=1), -1),
            finish(top_scores, -1),
            finish(tf.cast(labels, tf.int32), -1),
        ]
        outputs += [finish(tf.gather(o, anchor_indices, batch_dims=1), -1) for o in others]
        return outputs

    def compute_output_shape(self, input_shape):
        boxes_shape, classification_shape, *others_shapes = input_shape
        batch, num_anchors, num_classes = classification_shape
        if self.max_detections is not None:
            k = self.max_detections
        elif num_anchors is not None and num_classes is not None:
            k = num_anchors * num_classes
        else:
            k = None
        shapes = [(batch, k, boxes_shape[-1]), (batch, k), (batch, k)]
        shapes += [(s[0], k, *s[2:]) for s in others_shapes]
        return shapes

    def compute_output_spec(self, inputs):
        boxes, classification, *others = inputs
        shapes = self.compute_output_shape([x.shape for x in inputs])
        dtypes = [boxes.dtype, classification.dtype, "int32"] + [o.dtype for o in others]
        return [keras.KerasTensor(s, dtype=d) for s, d in zip(shapes, dtypes)]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "nms": self.nms,
                "score_threshold": self.score_threshold,
                "nms_threshold": self.nms_threshold,
                "max_detections": self.max_detections,
                "parallel_iterations": self.parallel_iterations,
            }
        )
        return config
