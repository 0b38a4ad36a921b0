"""How much of a `shapes` caption a sentence embedding holds: a linear probe per attribute.

A ridge-regression probe (one-hot targets, closed form) is fitted on the embeddings of
`train` captions and scored on `test` captions. Its targets are the attributes each caption
states, read back by `shapes_captions.parse_caption` in the caption's own order:

  colour, shape, size, position   of the object of single-object captions (the readings a
                                  bag of words of the caption gets exactly right);
  num_objects                     over every caption;
  pair/colour0 .. pair/relation   of two-object captions, objects in the order the caption
                                  names them (a caption may name either object first).

An embedding that reads a field at chance tells the generator nothing about it: the STEM
sentence embedding conditions both the generator's first stage and the conditional
discriminators.
"""

from __future__ import annotations

import numpy as np

from mirrorgan_jax.data import shapes_captions
from mirrorgan_jax.data.schema import ATTRIBUTE_FIELDS

_F = {name: i for i, name in enumerate(ATTRIBUTE_FIELDS)}
# probe name -> (attribute field, captions it is scored on: "single", "pair" or "all")
TARGETS: dict[str, tuple[str, str]] = {
    "colour": ("colour0", "single"),
    "shape": ("shape0", "single"),
    "size": ("size0", "single"),
    "position": ("position0", "single"),
    "num_objects": ("num_objects", "all"),
    **{
        f"pair/{f}": (f, "pair")
        for f in ("colour0", "shape0", "size0", "colour1", "shape1", "size1", "relation")
    },
}


def caption_attributes(captions: list[str]) -> np.ndarray:
    """int64 [N, NUM_ATTRIBUTES]: what each caption states, in its own object order."""
    return np.stack([shapes_captions.parse_caption(c) for c in captions])


def linear_probe(
    train_embeddings: np.ndarray,
    train_attributes: np.ndarray,
    test_embeddings: np.ndarray,
    test_attributes: np.ndarray,
    l2: float = 1.0,
) -> dict[str, float]:
    """Test accuracy of a ridge probe per `TARGETS` entry.

    Embeddings [N, D] are standardised with the train statistics and get a bias column; for
    each target a ridge regression onto the one-hot classes, fitted on the train rows where
    the target is defined, predicts the argmax class of the defined test rows.
    """
    x_tr = np.asarray(train_embeddings, np.float64)
    x_te = np.asarray(test_embeddings, np.float64)
    if x_tr.ndim != 2 or x_te.ndim != 2 or x_tr.shape[1] != x_te.shape[1]:
        raise ValueError(
            f"linear_probe: embeddings must be [N, D] with one D, got {x_tr.shape} and {x_te.shape}"
        )
    mean, std = x_tr.mean(0), x_tr.std(0) + 1e-6
    x_tr = np.concatenate([(x_tr - mean) / std, np.ones((len(x_tr), 1))], axis=1)
    x_te = np.concatenate([(x_te - mean) / std, np.ones((len(x_te), 1))], axis=1)
    rows = {
        "all": lambda a: np.ones(len(a), bool),
        "single": lambda a: a[:, _F["num_objects"]] == 1,
        "pair": lambda a: a[:, _F["num_objects"]] == 2,
    }
    out = {}
    for name, (field, which) in TARGETS.items():
        k = _F[field]
        tr = rows[which](train_attributes) & (train_attributes[:, k] >= 0)
        te = rows[which](test_attributes) & (test_attributes[:, k] >= 0)
        if not tr.any() or not te.any():
            continue
        classes = int(max(train_attributes[tr, k].max(), test_attributes[te, k].max())) + 1
        y = np.eye(classes)[train_attributes[tr, k]]
        a = x_tr[tr]
        w = np.linalg.solve(a.T @ a + l2 * np.eye(a.shape[1]), a.T @ y)
        pred = np.argmax(x_te[te] @ w, axis=1)
        out[name] = float(np.mean(pred == test_attributes[te, k]))
    return out
