# The targets are the interface: `make demo`, `make test` work as the first command on a fresh machine.
PYTHON ?= python3
# lite: mmcv-lite + prove_jobs/mmcv_shim.py (a minute to install) in .venv; full: mmcv with compiled
# ops, built from source (10-25 minutes on 2 cores, once: pip caches the wheel), plus mmdet for
# Mask2Former, in .venv-full. Any target takes MMCV_FLAVOUR=full (`make test MMCV_FLAVOUR=full` runs
# the whole suite there); `make test-full` builds .venv-full and runs the tests marked full.
# docs/install.md says why there are two.
MMCV_FLAVOUR ?= lite
FULL_VENV := .venv-full
ifeq ($(MMCV_FLAVOUR),full)
VENV ?= $(FULL_VENV)
else
VENV ?= .venv
endif
BIN := $(VENV)/bin
DEMO_ROOT ?= demo
DEMO_SWEEP := job_templates/sweeps/demo.toml
STAMP := $(VENV)/.installed
# parallel compile jobs for the mmcv source build (MAX_JOBS); 2 on these 2-core machines
MMCV_MAX_JOBS ?= 2
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install demo test test-fast test-slurm test-multinode test-full lint bench slurm-up slurm-down clean-demo

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first, pinned to the CPU wheel: a bare `torch` requirement would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[train,report,dev]'
ifeq ($(MMCV_FLAVOUR),full)
	@# mmcv-lite and mmcv install the same mmcv/ folder: remove both (the line above reinstalls
	@# mmcv-lite whenever this recipe reruns), then install the compiled one. setup.py imports torch
	@# and pkg_resources, hence --no-build-isolation and setuptools<81.
	$(BIN)/python -m pip uninstall -q -y mmcv-lite mmcv
	$(BIN)/python -m pip install -q 'setuptools<81' wheel ninja
	MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=$(MMCV_MAX_JOBS) $(BIN)/python -m pip install --no-build-isolation mmcv==2.1.0
	$(BIN)/python -m pip install -q mmdet==3.3.0
	$(BIN)/python -c 'import mmcv._ext, mmcv.ops, mmdet, mmseg.models; print("full flavour: mmcv", mmcv.__version__, "mmdet", mmdet.__version__)'
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
	$(BIN)/python -m pytest -q -m "slurm and not multinode"

test-multinode: install
	$(BIN)/python -m pytest -q -m multinode

# The tests that need the full flavour (Mask2Former), in .venv-full whatever MMCV_FLAVOUR says.
# Builds .venv-full first (once: its own stamp). PROVE_JOBS_REQUIRE_FULL turns the skip they take
# on mmcv-lite into an error, so that a broken .venv-full cannot pass by skipping everything.
test-full:
	$(MAKE) install MMCV_FLAVOUR=full VENV=$(FULL_VENV)
	PROVE_JOBS_REQUIRE_FULL=1 $(FULL_VENV)/bin/python -m pytest -q -m full

# A real SLURM cluster for the integration tests (root; Debian's slurm packages): one node, and with
# NODES=2 (or more) also a cluster of that many nodes beside it, each node in its own network, UTS and
# mount namespace (tests/cluster/multinode-up.sh; the tests marked multinode). slurm-down stops both.
NODES ?= 1
slurm-up:
	bash tests/cluster/slurm-up.sh
	if [ "$(NODES)" -gt 1 ]; then SLURM_NODES=$(NODES) bash tests/cluster/multinode-up.sh; fi

slurm-down:
	bash tests/cluster/multinode-down.sh
	bash tests/cluster/slurm-down.sh

# Log-reading speed on 1,000 synthetic runs (about 1 GB under bench-data/, reused between runs); then
# a small root's status after one look at 50,000 planted runs (a minute or two, in a temporary folder);
# then status --root and report --root on 165, 1,000 and 10,000 runs of mixed formats, and warm report against warm
# status side by side at each size (0.7 GB under bench-data-root/, generated once; about 5 minutes).
bench: install
	$(BIN)/python benchmarks/bench_status.py
	$(BIN)/python benchmarks/bench_cache.py
	$(BIN)/python benchmarks/bench_root.py
	$(BIN)/python benchmarks/bench_signal_agree.py

lint: install
	$(BIN)/ruff check prove_jobs tests job_templates benchmarks
	$(BIN)/mypy

clean-demo:
	rm -rf $(DEMO_ROOT)
