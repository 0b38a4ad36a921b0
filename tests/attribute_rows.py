"""Attribute rows of the `shapes` schema for tests: `single(...)` and `pair(...)` build one
row [NUM_ATTRIBUTES] (fields not given are -1); `F` maps a field name to its column."""

from __future__ import annotations

import numpy as np

from mirrorgan_jax.data.schema import ATTRIBUTE_FIELDS, NUM_ATTRIBUTES

F = {name: i for i, name in enumerate(ATTRIBUTE_FIELDS)}


def row(**kw) -> np.ndarray:
    """One attribute row; fields not given are -1."""
    a = np.full(NUM_ATTRIBUTES, -1, np.int64)
    for k, v in kw.items():
        a[F[k]] = v
    return a


def single(colour, shape, size, position) -> np.ndarray:
    return row(num_objects=1, colour0=colour, shape0=shape, size0=size, position0=position)


def pair(c0, s0, z0, c1, s1, z1, relation) -> np.ndarray:
    return row(
        num_objects=2, colour0=c0, shape0=s0, size0=z0, colour1=c1, shape1=s1, size1=z1,
        relation=relation,
    )  # fmt: skip
