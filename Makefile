# mrtherm: `make demo` and `make test` set everything up on a fresh Debian machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test venv sysdeps kernels bench clean docs mutation gpu-check gpu-wheels

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mrtherm demo --out demo_out

test: sysdeps $(STAMP) kernels
	$(PY) -m pytest -q tests --nbmake notebooks

sysdeps:
	@bash tools/sysdeps.sh

kernels:
	@bash tools/check_kernels.sh

docs: sysdeps $(STAMP)
	MRTHERM_DOCS_DIR=$(CURDIR)/docs $(PY) -m pytest -q tests/napari/test_widgets.py

mutation: $(STAMP)
	$(PY) -m pip install --quiet "mutmut>=3.3"
	rm -rf mutants
	bash tools/mutmut_watchdog.sh & OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 $(PY) -m mutmut run || true  # BLAS threads deadlock in forked workers
	$(PY) tools/mutation_report.py

# on a machine with a CUDA GPU: the GPU tests and benchmarks (tools/gpu_check.sh says where results go)
gpu-check:
	@bash tools/gpu_check.sh

# wheels for a GPU machine without a package registry (used by gpu-check there)
gpu-wheels: $(STAMP)
	@bash tools/gpu_wheels.sh

bench: $(STAMP)
	$(PY) benchmarks/bench_run.py

clean:
	rm -rf $(VENV) demo_out .pytest_cache
