"""The stored torchvision forwards that the ImageNet-trunk converters are checked against."""

import os

import numpy as np
import pytest

# Written once with torch by tests/testdata/torch/make_imagenet_trunks.py.
REFERENCE = os.path.join(
    os.path.dirname(__file__), "..", "testdata", "torch", "imagenet_trunks.npz"
)


@pytest.fixture(scope="session")
def reference() -> dict[str, np.ndarray]:
    with np.load(REFERENCE) as f:
        return {k: f[k] for k in f.files}
