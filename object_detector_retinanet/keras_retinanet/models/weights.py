"""Weight files in and out: by-name loading of Keras 3 and Keras 2 HDF5 files, snapshot metadata.

Loading **by layer name** is the original's semantics for ``--weights``, ``--imagenet-weights`` and
for putting stage-1 weights under a new Soft-IoU head (``load_weights(by_name=True,
skip_mismatch=True)`` in Keras 2). Keras 3 only offers ``by_name`` for legacy ``.h5`` files and does
not look inside nested sub-models, so this module reads the files itself:

- **Keras 3** ``*.weights.h5`` (ours): every layer's variables sit in a ``.../vars`` group whose
  ``name`` attribute is the layer name, as datasets ``0..k`` in the layer's own saving order.
- **Keras 2** HDF5 (the original's snapshots, full models saved by Keras 2.2.4, and fizyr's
  ImageNet files): ``[model_weights/]<layer>`` groups whose ``weight_names`` attribute lists
  ``<inner layer>/<variable>:0`` paths; nested sub-models (``regression_submodel`` ...) list their
  inner layers' weights, which is how the heads' ``pyramid_*`` layers are found.

Layers are matched by name anywhere in the model (recursing into sub-models); a layer whose shapes
differ is skipped with a warning (``skip_mismatch``); layers absent from the file keep their values.

Resuming (``--snapshot``) instead uses Keras' own topological ``load_weights``, which also restores
the optimizer; the epoch reached is stored as an attribute of the snapshot file.
"""

import logging
import os
import re

import h5py
import numpy as np

logger = logging.getLogger(__name__)

EPOCH_ATTR = "sku110k_epoch"  # last completed (1-based) epoch, written into our snapshots
STAGE_ATTR = "sku110k_stage"  # the training stage's name: "stage1" or "stage2"
BACKBONE_ATTR = "sku110k_backbone"  # the backbone's name
FREEZE_BN_ATTR = (
    "sku110k_freeze_bn"  # 1 when BatchNorm was frozen from the start (a resume keeps it)
)
BN_SETTLED_ATTR = "sku110k_bn_settled"  # 1 once --freeze-bn-after has measured and frozen it
#: The epoch in a snapshot's file name (:func:`snapshot_name`), for files without metadata.
SNAPSHOT_RE = re.compile(r"_(\d+)\.weights\.h5$")


def iter_layers(model):
    """Every layer of ``model``, recursing into nested sub-models (depth first)."""
    import keras

    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from iter_layers(layer)


def _layer_variables(layer):
    """A layer's own variables in Keras 3's saving order (trainable, then non-trainable)."""
    return list(layer._trainable_variables) + list(layer._non_trainable_variables)


def file_format(path) -> str:
    """``"keras3"`` for a Keras 3 ``.weights.h5``, ``"keras2"`` for a Keras 2 HDF5 file."""
    with h5py.File(path, "r") as f:
        if "layers" in f and "layer_names" not in f.attrs:
            return "keras3"
        if "model_weights" in f or "layer_names" in f.attrs:
            return "keras2"
    raise ValueError(f"{path}: not a Keras weights file (no 'layers' group or 'layer_names').")


def _decode(name):
    return name.decode("utf8") if isinstance(name, bytes) else str(name)


def read_weights_by_layer(path, arrays=True) -> dict:
    """Read a weights file into ``{layer name: [(variable name or index, array), ...]}``.

    With ``arrays=False`` only the names are read (the arrays are ``None``): cheap inspection.
    """

    def value(dataset):
        return np.asarray(dataset) if arrays else None

    weights = {}
    if file_format(path) == "keras3":
        with h5py.File(path, "r") as f:

            def visit(name, obj):
                if name.startswith("optimizer"):
                    return
                if isinstance(obj, h5py.Group) and name.endswith("vars") and len(obj):
                    layer_name = _decode(obj.attrs.get("name", ""))
                    keys = sorted(obj.keys(), key=int)
                    weights[layer_name] = [(int(k), value(obj[k])) for k in keys]

            f.visititems(visit)
        return weights

    with h5py.File(path, "r") as f:
        root = f["model_weights"] if "model_weights" in f else f
        for group_name in root.attrs["layer_names"]:
            group = root[_decode(group_name)]
            for weight_name in group.attrs.get("weight_names", []):
                weight_name = _decode(weight_name)
                layer_name, _, var = weight_name.rpartition("/")
                var = var.split(":")[0]
                # Keras 2 nests names as "<layer>/<var>:0" (sometimes "<outer>/<layer>/<var>:0").
                layer_name = layer_name.split("/")[-1] or _decode(group_name)
                weights.setdefault(layer_name, []).append((var, value(group[weight_name])))
    return weights


def load_weights_by_name(model, path, skip_mismatch=True) -> dict:
    """Load ``path`` into ``model`` by layer name (see the module docstring).

    Returns:
        ``{"loaded": [...], "mismatched": [...], "missing": [...]}`` layer names, where *missing*
        are weighted layers of ``model`` that the file does not have (they keep their values).

    Raises:
        ValueError: on a shape mismatch when ``skip_mismatch`` is False, or when the file shares no
            layer name with the model (almost certainly the wrong file).
    """
    import keras

    stored = read_weights_by_layer(path)
    report = {"loaded": [], "mismatched": [], "missing": []}
    for layer in iter_layers(model):
        variables = _layer_variables(layer)
        if not variables or isinstance(layer, keras.Model):
            continue
        if layer.name not in stored:
            report["missing"].append(layer.name)
            continue
        entries = stored[layer.name]
        if isinstance(entries[0][0], int):  # Keras 3: same order as the layer's variables
            values = [v for _, v in entries]
        else:  # Keras 2: match by variable name (kernel, bias, gamma, moving_mean, ...)
            by_name = dict(entries)
            values = [by_name.get(v.name) for v in variables]
        shapes_ok = len(values) == len(variables) and all(
            val is not None and tuple(val.shape) == tuple(var.shape)
            for val, var in zip(values, variables)
        )
        if not shapes_ok:
            if not skip_mismatch:
                raise ValueError(f"{path}: weights of layer '{layer.name}' do not fit the model.")
            report["mismatched"].append(layer.name)
            continue
        for val, var in zip(values, variables):
            var.assign(val)
        report["loaded"].append(layer.name)
    if not report["loaded"]:
        raise ValueError(
            f"{path}: no layer of this file matches the model by name; is it a RetinaNet/ResNet "
            "weights file?"
        )
    if report["mismatched"]:
        logger.warning(
            "%s: skipped %d layer(s) whose shapes differ: %s",
            path,
            len(report["mismatched"]),
            ", ".join(report["mismatched"][:10]),
        )
    return report


def write_snapshot_attrs(path, **attrs) -> None:
    """Store small metadata (epoch, stage) as HDF5 root attributes of a snapshot file."""
    with h5py.File(path, "a") as f:
        for key, value in attrs.items():
            f.attrs[key] = value


def read_snapshot_attrs(path) -> dict:
    """The metadata :func:`write_snapshot_attrs` stored (empty for foreign files)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"Snapshot not found: {path}")
    with h5py.File(path, "r") as f:
        return {
            k: (v.item() if hasattr(v, "item") else _decode(v))
            for k, v in f.attrs.items()
            if k.startswith("sku110k_")
        }


def snapshot_name(prefix, backbone, epoch) -> str:
    """``{prefix}{backbone}_csv_{epoch:02d}.weights.h5`` (the original's stem + Keras 3 suffix)."""
    return f"{prefix}{backbone}_csv_{epoch:02d}.weights.h5"


def initial_epoch_of(snapshot_path) -> int:
    """The epoch a snapshot ends (from its metadata, else from its ``_NN`` file name)."""
    attrs = read_snapshot_attrs(snapshot_path)
    if EPOCH_ATTR in attrs:
        return int(attrs[EPOCH_ATTR])
    match = SNAPSHOT_RE.search(os.path.basename(snapshot_path))
    return int(match.group(1)) if match else 0


def has_layer_weights(path, substring) -> bool:
    """True when the file holds weights for a layer whose name contains ``substring``."""
    return any(substring in name for name in read_weights_by_layer(path, arrays=False))
