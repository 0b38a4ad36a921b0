# Sourced by the GPU scripts (run from the repo root): when python3 cannot import the modules
# named in $1 (e.g. "ml_collections, PIL"), install .gpu_wheels/*.whl into /tmp/mg_deps and put
# it on PYTHONPATH; the lent GPU machines have jax but not these, and no internet.
if ! python3 -c "import $1" 2>/dev/null; then
  python3 -m pip install -q --no-deps --target /tmp/mg_deps .gpu_wheels/*.whl
  export PYTHONPATH=/tmp/mg_deps:${PYTHONPATH:-}
fi
