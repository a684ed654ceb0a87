# The targets are the interface: `make demo`, `make test` work as the first command on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_ROOT ?= demo
DEMO_SWEEP := job_templates/sweeps/demo.toml
STAMP := $(VENV)/.installed
# lite: mmcv-lite + prove_jobs/_mmcv_shim.py (a minute to install); full: mmcv with compiled ops,
# built from source (about 10 minutes on 2 cores), plus mmdet for Mask2Former. docs/install.md says why.
MMCV_FLAVOUR ?= lite
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install demo test test-fast test-slurm lint bench slurm-up slurm-down clean-demo

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first, pinned to the CPU wheel: a bare `torch` requirement would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[train,report,dev]'
ifeq ($(MMCV_FLAVOUR),full)
	$(BIN)/python -m pip uninstall -q -y mmcv-lite
	$(BIN)/python -m pip install -q 'setuptools<81' wheel ninja
	MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=2 $(BIN)/python -m pip install --no-build-isolation mmcv==2.1.0
	$(BIN)/python -m pip install -q mmdet==3.3.0
endif
	touch $@

install: $(STAMP)

demo: install
	$(BIN)/prove-jobs demo-data $(DEMO_ROOT)/data/cityscapes
	mkdir -p $(DEMO_ROOT)/runs
	DEMO_ROOT=$(DEMO_ROOT) $(BIN)/prove-jobs submit $(DEMO_SWEEP) --executor local --skip-done --wait
	DEMO_ROOT=$(DEMO_ROOT) $(BIN)/prove-jobs status $(DEMO_SWEEP)
	DEMO_ROOT=$(DEMO_ROOT) $(BIN)/prove-jobs report $(DEMO_SWEEP) --out $(DEMO_ROOT)/report.md --plots $(DEMO_ROOT)/plots

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

test-slurm: install
	$(BIN)/python -m pytest -q -m slurm

# A real single-node SLURM cluster for the integration tests (root; Debian's slurm packages).
slurm-up:
	bash tests/cluster/slurm-up.sh

slurm-down:
	bash tests/cluster/slurm-down.sh

# Log-reading speed on 1,000 synthetic runs (about 1 GB under bench-data/, reused between runs).
bench: install
	$(BIN)/python benchmarks/bench_status.py

lint: install
	$(BIN)/ruff check prove_jobs tests job_templates benchmarks
	$(BIN)/mypy

clean-demo:
	rm -rf $(DEMO_ROOT)
