"""SKU-110K: Precise Detection in Densely Packed Scenes (Goldman et al., CVPR 2019).

A modern (TensorFlow 2.21 / Keras 3) re-implementation of the original SKU-110K code: a RetinaNet
with a Soft-IoU head trained in two stages, and the EM-Merger post-processor.

Comments and docstrings cite the original code's behaviour as ``§n`` and its bugs as ``Bnn``:
both refer to ``docs/original-behaviour.md``, which says for each point what is kept and what is
fixed.
"""

__version__ = "1.0.0"
