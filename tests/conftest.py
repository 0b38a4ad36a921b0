"""Test set-up: 8 fake CPU devices (set before jax is imported), repo root on sys.path."""

import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Modules whose compile-heavy fixtures take minutes, longest first. `make test` runs
# `--dist loadfile --no-loadscope-reorder`, so the two workers take modules in collection
# order: starting these first leaves the many short modules to fill in at the end, instead of
# one worker running the end-to-end module alone after the other has finished.
_SLOW_MODULES = (
    "test_run.py",
    "test_gan.py",
    "test_benchmark.py",
    "test_run_imagenet.py",
    "test_shapes_classifier.py",
    "test_shapes_sweep.py",
    "test_import_all.py",
    "test_evaluate.py",
    "test_parity_gan_step.py",
)


def pytest_collection_modifyitems(session, config, items):
    def rank(item):
        name = item.path.name
        return _SLOW_MODULES.index(name) if name in _SLOW_MODULES else len(_SLOW_MODULES)

    items.sort(key=rank)  # stable: the order within a module and among the rest is kept
