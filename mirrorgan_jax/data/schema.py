"""The one record schema every data set (shapes, CUB, COCO) is stored in and batched to.

Stored example (tfds `FeaturesDict`, see `tfds_features()`):
  image       uint8 [H, W, 3]   the image (CUB: already cropped to its bounding-box square)
  captions    Sequence(Text)    all raw captions of the image (10 for CUB/shapes, 5 for COCO)
  class_id    int64             class id (CUB class, shapes first colour-shape pair, COCO: index)
  key         Text              the official file key, e.g. '002.Laysan_Albatross/Laysan_..._1027'
  attributes  int64 [NUM_ATTRIBUTES]  shapes labels (see ATTRIBUTE_FIELDS); -1 where not defined

Batch (numpy, from `input_pipeline`):
  images      list of float32 [B, S, S, 3] in [-1, 1], one per stage (smallest first)
  tokens      int32 [B, T], zero-padded (0 = pad / <end>)
  lengths     int32 [B]  true token count (capped at T), >= 1
  class_id    int32 [B]
  attributes  int32 [B, NUM_ATTRIBUTES]
  key         bytes [B]  (host only; dropped before device transfer)
"""

from __future__ import annotations

ATTRIBUTE_FIELDS = (
    "num_objects",
    "colour0",
    "shape0",
    "size0",
    "position0",  # single object: left/right/top/bottom/centre index; -1 with two objects
    "colour1",
    "shape1",
    "size1",
    "relation",  # two objects: object0 is (left of, right of, above, below) object1; else -1
)
NUM_ATTRIBUTES = len(ATTRIBUTE_FIELDS)
# The relation index of the same pair described from object1's side (left of <-> right of,
# above <-> below).
INVERSE_RELATION: tuple[int, ...] = (1, 0, 3, 2)
DEVICE_KEYS = ("images", "tokens", "lengths", "class_id", "attributes")


def tfds_features():
    """The tfds FeaturesDict shared by every builder."""
    import numpy as np
    import tensorflow_datasets as tfds

    return tfds.features.FeaturesDict(
        {
            "image": tfds.features.Image(shape=(None, None, 3)),
            "captions": tfds.features.Sequence(tfds.features.Text()),
            "class_id": tfds.features.Scalar(dtype=np.int64),
            "key": tfds.features.Text(),
            "attributes": tfds.features.Tensor(shape=(NUM_ATTRIBUTES,), dtype=np.int64),
        }
    )
