"""The one training/validation batch generator of both stages (§6.2, §6.3, §8.4).

The original has two near-identical generators (``Generator`` for stage 1, ``GeneratorIou`` for
stage 2) that differ only in how targets are computed. Here a single :class:`Generator` takes the
targets function as an argument (``utils.anchors.stage1_targets`` or ``stage2_targets``), so the
data path of the base detector and of the Soft-IoU head (Goldman et al., CVPR 2019, §3) is shared.

Per image of a group (§8.4, KEEP): load BGR -> ``filter_annotations`` (warning) -> Caffe mean
subtraction -> random affine transform *after* the mean subtraction (QUIRK) -> resize 800/1333
(bilinear) with boxes scaled alike. Then the group is zero-padded top-left to its max shape, anchors
are generated for that padded shape and the targets function builds the targets.

Differences from the original, on purpose:
- B5: ``group_method="ratio"`` sorts by the true aspect ratio width / height.
- B25: an unreadable image (truncated, corrupt, vanished) is skipped with a warning naming the
  file and replaced in its group by the next readable image in dataset order; its index is
  remembered so it is not retried. Only if every image is unreadable does a batch raise.
- The epoch shuffle of the groups is seeded (``seed``) and thus reproducible.

Thread safety: ``__getitem__`` only reads the group list, draws transforms under a lock and records
bad images under a lock, so ``keras.utils.PyDataset`` worker threads may call it concurrently. The
object pickles (locks are re-created), so worker processes work too; each process then keeps its own
list of bad images and its own copy of the transform generator's random state.

Requires the Keras package (for ``keras.utils.PyDataset``); the maths lives in ``utils/``.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Iterator, Sequence

import keras
import numpy as np

from object_detector_retinanet.keras_retinanet.config import AnchorConfig, TrainConfig
from object_detector_retinanet.keras_retinanet.utils.image import preprocess_image, resize_image
from object_detector_retinanet.keras_retinanet.utils.transform import (
    adjust_transform_for_image,
    apply_transform,
    transform_aabb,
)

_TRAIN = TrainConfig()

Annotations = dict  # {"bboxes": float64 (M, 4) x1, y1, x2, y2 pixels, "labels": int64 (M,)}
TargetsFn = Callable[[np.ndarray, list, list, int], dict]
GROUP_METHODS = ("none", "random", "ratio")


def filter_annotations(
    image: np.ndarray, annotations: Annotations, description: str = "image"
) -> Annotations:
    """Drop boxes with x2 <= x1, y2 <= y1, x1 < 0, y1 < 0, x2 > W or y2 > H, with a warning.

    Args:
        image: (H, W, C) image the boxes refer to.
        annotations: ``{"bboxes": (M, 4), "labels": (M,)}``.
        description: how to name the image in the warning (its path).

    Returns:
        The annotations with the invalid boxes removed (the same object if none is invalid).
    """
    boxes = annotations["bboxes"]
    height, width = image.shape[:2]
    invalid = (
        (boxes[:, 2] <= boxes[:, 0])
        | (boxes[:, 3] <= boxes[:, 1])
        | (boxes[:, 0] < 0)
        | (boxes[:, 1] < 0)
        | (boxes[:, 2] > width)
        | (boxes[:, 3] > height)
    )
    if not invalid.any():
        return annotations
    warnings.warn(
        f"Image {description} (shape {image.shape}) contains {int(invalid.sum())} invalid boxes, "
        f"dropped: {boxes[invalid].tolist()[:10]}",
        stacklevel=2,
    )
    return {key: value[~invalid] for key, value in annotations.items()}


class Generator(keras.utils.PyDataset):
    """Abstract batch generator; subclasses provide the data (see ``CSVGenerator``).

    Subclasses implement ``size``, ``num_classes``, ``load_image``, ``load_annotations`` and
    ``image_aspect_ratio`` (and may override ``image_path`` for nicer warnings); they must set
    everything those need *before* calling ``Generator.__init__``, which groups the images.

    Args:
        targets_fn: ``targets_fn(anchors (N, 4), image_group, annotations_group, num_classes)``
            returning the targets dict (``utils.anchors.stage1_targets`` / ``stage2_targets``).
            None: batches are the inputs alone (inference).
        batch_size: images per batch.
        group_method: "none" (dataset order), "random" (seeded shuffle) or "ratio" (by width /
            height, B5).
        shuffle_groups: shuffle the group order at construction and after every epoch.
        transform_generator: iterator of (3, 3) matrices (``utils.transform``), or None for no
            augmentation (validation, inference).
        image_min_side: resize target of the shorter side (800).
        image_max_side: cap of the longer side (1333).
        anchor_config: anchors for the targets (None: the defaults).
        seed: seed of the group shuffling (None: OS entropy).
        **pydataset_kwargs: ``workers``, ``use_multiprocessing``, ``max_queue_size`` for
            ``keras.utils.PyDataset``.
    """

    def __init__(
        self,
        targets_fn: TargetsFn | None = None,
        batch_size: int = _TRAIN.batch_size,
        group_method: str = "ratio",
        shuffle_groups: bool = True,
        transform_generator: Iterator[np.ndarray] | None = None,
        image_min_side: int = _TRAIN.image_min_side,
        image_max_side: int = _TRAIN.image_max_side,
        anchor_config: AnchorConfig | None = None,
        seed: int | None = None,
        **pydataset_kwargs,
    ) -> None:
        super().__init__(**pydataset_kwargs)
        if group_method not in GROUP_METHODS:
            raise ValueError(f"group_method must be one of {GROUP_METHODS}, got {group_method!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.targets_fn = targets_fn
        self.batch_size = int(batch_size)
        self.group_method = group_method
        self.shuffle_groups = shuffle_groups
        self.transform_generator = transform_generator
        self.image_min_side = image_min_side
        self.image_max_side = image_max_side
        self.anchor_config = anchor_config
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._transform_lock = threading.Lock()
        self._bad_lock = threading.Lock()
        self.bad_indices: set[int] = set()
        self.groups = self.group_images()
        if self.shuffle_groups:
            self._shuffle()

    # --- data source (subclass API) ---
    def size(self) -> int:
        """Number of images."""
        raise NotImplementedError

    def num_classes(self) -> int:
        """Number of classes (max label + 1)."""
        raise NotImplementedError

    def load_image(self, image_index: int) -> np.ndarray:
        """uint8 (H, W, 3) BGR image; raises OSError when unreadable."""
        raise NotImplementedError

    def load_annotations(self, image_index: int) -> Annotations:
        """``{"bboxes": float64 (M, 4), "labels": int64 (M,)}`` of the image (a fresh copy)."""
        raise NotImplementedError

    def image_aspect_ratio(self, image_index: int) -> float:
        """Width / height of the image."""
        raise NotImplementedError

    def image_path(self, image_index: int) -> str:
        """How warnings name an image (subclasses return the file path)."""
        return f"#{image_index}"

    # --- grouping and epochs ---
    def group_images(self) -> list[list[int]]:
        """Cut the (ordered) image indices into groups of ``batch_size``, wrapping at the end."""
        order = list(range(self.size()))
        if self.group_method == "random":
            self._rng.shuffle(order)
        elif self.group_method == "ratio":
            order.sort(key=self.image_aspect_ratio)  # B5: width / height, stable sort
        n = len(order)
        return [
            [order[x % n] for x in range(start, start + self.batch_size)]
            for start in range(0, n, self.batch_size)
        ]

    def _shuffle(self) -> None:
        permutation = self._rng.permutation(len(self.groups))
        self.groups = [self.groups[i] for i in permutation]  # one atomic rebind

    def on_epoch_end(self) -> None:
        """Reshuffle the group order (§8.4: groups shuffled every epoch)."""
        if self.shuffle_groups:
            self._shuffle()

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, index: int):
        """Batch ``index``: ``(inputs float32 (B, H, W, 3), targets dict)``, or the inputs alone
        when ``targets_fn`` is None."""
        if not 0 <= index < len(self.groups):
            raise IndexError(f"batch index {index} out of range [0, {len(self.groups)})")
        return self.compute_input_output(self.groups[index])

    # --- loading with B25 tolerance ---
    def _load_entry(self, image_index: int) -> tuple[int, np.ndarray, Annotations]:
        """(index, image, annotations) of ``image_index`` or of the next readable image (B25)."""
        n = self.size()
        for step in range(n):
            candidate = (image_index + step) % n
            if candidate in self.bad_indices:
                continue
            try:
                image = self.load_image(candidate)
            except OSError as error:
                with self._bad_lock:
                    self.bad_indices.add(candidate)
                warnings.warn(
                    f"skipping unreadable image {self.image_path(candidate)}: {error}",
                    stacklevel=3,
                )
                continue
            return candidate, image, self.load_annotations(candidate)
        raise RuntimeError(f"none of the {n} images of this generator could be read (B25)")

    def load_group(
        self, group: Sequence[int]
    ) -> tuple[list[int], list[np.ndarray], list[Annotations]]:
        """Indices used, images and annotations of a group (unreadable ones replaced, B25)."""
        entries = [self._load_entry(index) for index in group]
        return [e[0] for e in entries], [e[1] for e in entries], [e[2] for e in entries]

    # --- preprocessing ---
    def _next_transform(self) -> np.ndarray:
        with self._transform_lock:  # iterators are not thread-safe
            return np.asarray(next(self.transform_generator), dtype=np.float64)

    def preprocess_entry(
        self, image: np.ndarray, annotations: Annotations
    ) -> tuple[np.ndarray, Annotations]:
        """Mean subtraction, optional random transform, resize (§8.4 steps 3–5).

        Args:
            image: uint8 (H, W, 3) BGR.
            annotations: already filtered; not modified.

        Returns:
            float32 (H', W', 3) network input and the annotations in its frame.
        """
        image = preprocess_image(image)
        boxes = np.array(annotations["bboxes"], dtype=np.float64, copy=True)
        if self.transform_generator is not None:
            # QUIRK: augmentation after the mean subtraction, so replicated borders are in
            # mean-subtracted space; boxes are the AABB of the corners, not clipped/re-filtered.
            matrix = adjust_transform_for_image(self._next_transform(), image.shape)
            image = apply_transform(matrix, image)
            boxes = transform_aabb(matrix, boxes)
        image, scale = resize_image(image, self.image_min_side, self.image_max_side)
        boxes *= scale
        return image, {**annotations, "bboxes": boxes}

    def compute_inputs(self, image_group: Sequence[np.ndarray]) -> np.ndarray:
        """Zero-pad the images top-left to the group's max (H, W): float32 (B, H, W, 3)."""
        max_shape = tuple(max(image.shape[axis] for image in image_group) for axis in range(3))
        batch = np.zeros((len(image_group),) + max_shape, dtype=np.float32)
        for i, image in enumerate(image_group):
            batch[i, : image.shape[0], : image.shape[1], : image.shape[2]] = image
        return batch

    def compute_targets(
        self, inputs: np.ndarray, image_group: list, annotations_group: list
    ) -> dict:
        """Targets for the padded batch: anchors of its shape, then ``targets_fn``."""
        from object_detector_retinanet.keras_retinanet.utils.anchors import anchors_for_shape

        anchors = anchors_for_shape(inputs.shape[1:], anchor_config=self.anchor_config)
        return self.targets_fn(anchors, image_group, annotations_group, self.num_classes())

    def compute_input_output(self, group: Sequence[int]):
        """Load, filter, preprocess and batch one group; see ``__getitem__``."""
        indices, images, annotations = self.load_group(group)
        image_group, annotations_group = [], []
        for index, image, image_annotations in zip(indices, images, annotations):
            image_annotations = filter_annotations(image, image_annotations, self.image_path(index))
            image, image_annotations = self.preprocess_entry(image, image_annotations)
            image_group.append(image)
            annotations_group.append(image_annotations)
        inputs = self.compute_inputs(image_group)
        if self.targets_fn is None:
            return inputs
        return inputs, self.compute_targets(inputs, image_group, annotations_group)

    # --- pickling for worker processes ---
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_transform_lock", None)
        state.pop("_bad_lock", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._transform_lock = threading.Lock()
        self._bad_lock = threading.Lock()


def single_output_targets(targets):
    """Keras 3 wants a bare array (not a one-key dict) as the target of a single-output model."""
    if isinstance(targets, dict) and len(targets) == 1:
        return next(iter(targets.values()))
    return targets


class FixedSteps(keras.utils.PyDataset):
    """Exactly ``steps`` batches per epoch drawn from ``generator`` (what ``fit`` iterates).

    The original's generators were endless: ``--steps`` (10,000 by default) is not tied to the
    dataset size, and each full pass over the groups came in a new random order. Global step
    ``g = epoch * steps + i`` maps to pass ``g // len(generator)`` and a position in that pass's
    own permutation (seeded by ``seed`` and the pass number), so passes are reshuffled, a resumed
    run (``initial_epoch``) continues the same sequence, and the order never depends on worker
    timing. ``shuffle=False`` walks the groups in order (validation). A module-level class, so
    process workers can pickle it.
    """

    def __init__(
        self,
        generator,
        steps,
        seed=None,
        initial_epoch=0,
        shuffle=True,
        workers=1,
        use_multiprocessing=False,
    ):
        super().__init__(workers=workers, use_multiprocessing=use_multiprocessing)
        self.generator = generator
        self.steps = int(steps)
        self.epoch = int(initial_epoch)
        self.shuffle = shuffle
        self.seed = 0 if seed is None else int(seed)
        self._orders = {}

    def __len__(self):
        return self.steps

    def _order(self, epoch_pass):
        if not self.shuffle:
            return np.arange(len(self.generator))
        order = self._orders.get(epoch_pass)
        if order is None:  # deterministic, so a race between workers only recomputes it
            order = np.random.default_rng([self.seed, epoch_pass]).permutation(len(self.generator))
            self._orders = {epoch_pass: order}
        return order

    def __getitem__(self, index):
        epoch_pass, position = divmod(self.epoch * self.steps + index, len(self.generator))
        inputs, targets = self.generator[int(self._order(epoch_pass)[position])]
        return inputs, single_output_targets(targets)

    def on_epoch_end(self):
        self.epoch += 1
