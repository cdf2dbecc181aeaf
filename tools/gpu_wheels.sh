#!/usr/bin/env bash
# Wheels for a GPU machine that has CuPy, NumPy, SciPy, pytest (and no package registry): mrtherm itself
# (built here, so its entry points are registered there) and the pure-Python dependencies such a machine
# lacks. Written to .whl/ (ignored by git); `make gpu-check` installs them when the folder is there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
rm -rf .whl && mkdir -p .whl
"$PY" -m pip wheel --quiet --no-deps --no-build-isolation -w .whl . 2>/dev/null \
  || "$PY" -m pip wheel --quiet --no-deps -w .whl .
for pkg in nibabel array-api-compat pydicom pynetdicom; do  # pydicom, pynetdicom: the live benchmark
  ver=$("$PY" -c "import importlib.metadata as m; print(m.version('$pkg'))")
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl "$pkg==$ver"
done
ls -la .whl
