"""Semantic accuracy of generated `shapes` images, from predicted and target attributes.

Metrics (fractions of images; a field that is -1 in the target is not checked). Both sides are
put in canonical object order first (`data.shapes.canonical_attributes`), so either reading of
a two-object caption may be given:
  num_objects   the object count is right;
  colour        every defined colour is right (colour0, and colour1 for two objects);
  shape, size   likewise for shape0/shape1 and size0/size1;
  position      position0 right, over single-object targets only;
  relation      relation right, over two-object targets only (canonical: the axis, with the
                objects' order checked through the colour/shape/size fields);
  layout        position (one object) or relation (two objects) right, over all images;
  all_correct   every defined field right (the whole caption is depicted);
  field/<name>  accuracy of each field over the rows where it is defined;
  shape/<group> fraction of target objects drawn with their shape, over the objects of one
                size (`small`, `large`) or of scenes with one or two objects (`one_object`,
                `two_objects`): crowding and size are what make a shape hard to draw.
`domain_fid` is an FID in the feature space of the attribute classifier
(`evaluation.shapes_classifier`), which predicts the attributes of generated images.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mirrorgan_jax.data.schema import ATTRIBUTE_FIELDS
from mirrorgan_jax.data.shapes import SIZES, canonical_attributes, check_attributes
from mirrorgan_jax.evaluation.fid import fid_from_activations

_F = {name: i for i, name in enumerate(ATTRIBUTE_FIELDS)}
# Attribute groups of the metrics: one column per object.
GROUPS: dict[str, tuple[str, ...]] = {
    "colour": ("colour0", "colour1"),
    "shape": ("shape0", "shape1"),
    "size": ("size0", "size1"),
}


def attribute_accuracy(predictions: Any, targets: Any) -> dict[str, float]:
    """The metrics of the module doc from predicted and target attributes [N, NUM_ATTRIBUTES].

    Both are canonicalised first (so either object order of a two-object caption may be
    given); target fields that are -1 are not checked. Fractions over the images the metric
    applies to (NaN when there are none, e.g. `relation` without two-object targets).
    """
    pred = canonical_attributes(check_attributes(predictions, "attribute_accuracy(predictions)"))
    tgt = canonical_attributes(check_attributes(targets, "attribute_accuracy(targets)"))
    if pred.shape != tgt.shape:
        raise ValueError(f"attribute_accuracy: shapes differ ({pred.shape} vs {tgt.shape})")
    defined = tgt >= 0  # [N, A]
    ok = (pred == tgt) | ~defined  # [N, A]; undefined fields never count against an image

    def frac(mask: np.ndarray, rows: np.ndarray | None = None) -> float:
        if rows is not None:
            mask = mask[rows]
        return float(np.mean(mask)) if mask.size else float("nan")

    single = tgt[:, _F["num_objects"]] == 1
    pair = tgt[:, _F["num_objects"]] == 2
    out = {"num_objects": frac(ok[:, _F["num_objects"]])}
    for group, fields in GROUPS.items():
        out[group] = frac(np.all(ok[:, [_F[f] for f in fields]], axis=1))
    out["position"] = frac(ok[:, _F["position0"]], single)
    out["relation"] = frac(ok[:, _F["relation"]], pair)
    out["layout"] = frac(ok[:, _F["position0"]] & ok[:, _F["relation"]])
    out["all_correct"] = frac(np.all(ok, axis=1))
    for f, k in _F.items():
        out[f"field/{f}"] = frac((pred[:, k] == tgt[:, k])[defined[:, k]])
    out.update(_shape_by_object(pred, tgt))
    return out


def _shape_by_object(pred: np.ndarray, tgt: np.ndarray) -> dict[str, float]:
    """Shape accuracy over the target objects (each object of a pair counted), split by the
    object's size and by its scene's object count."""
    right, size, count = [], [], []
    for k in (0, 1):
        defined = tgt[:, _F[f"shape{k}"]] >= 0  # [N]
        right.append((pred[:, _F[f"shape{k}"]] == tgt[:, _F[f"shape{k}"]])[defined])
        size.append(tgt[defined, _F[f"size{k}"]])
        count.append(tgt[defined, _F["num_objects"]])
    right, size, count = (np.concatenate(a) for a in (right, size, count))  # [objects]
    groups = {f"shape/{name}": size == i for i, name in enumerate(SIZES)}
    groups.update({"shape/one_object": count == 1, "shape/two_objects": count == 2})
    return {k: float(np.mean(right[m])) if m.any() else float("nan") for k, m in groups.items()}


def domain_fid(real_features: Any, fake_features: Any) -> float:
    """FID between two sets of classifier features [N, D] (pytorch-fid's formula)."""
    return fid_from_activations(real_features, fake_features)
