# Two entry points: `make demo` (set up, then a real clock-reading run) and `make test`.
# Both are idempotent: the venv, the installed requirements and the built extension are reused.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
REQUIREMENTS_STAMP := $(VENV)/.requirements-installed
EXTENSION_STAMP := $(VENV)/.extension-built
EXTENSION_SOURCES := setup.py $(shell find prismlab/kernels/csrc -type f 2>/dev/null)
DEMO_SHARDS := data/clocks-demo
DEMO_RUNS := runs

.PHONY: setup demo test test-fast clean gpu-wheels gpu-check bench-setup

setup: $(EXTENSION_STAMP)

$(PY):
	@echo "==> creating virtual environment $(VENV)"
	$(PYTHON) -m venv $(VENV)

$(REQUIREMENTS_STAMP): requirements.txt | $(PY)
	@echo "==> installing pinned requirements (torch, accelerate, wandb, webdataset, submitit, ...)"
	$(PY) -m pip install --quiet -r requirements.txt
	@touch $@

$(EXTENSION_STAMP): $(REQUIREMENTS_STAMP) $(EXTENSION_SOURCES)
	@echo "==> building the C++/CUDA extension prismlab._C ahead of time (setup.py, ninja)"
	$(PY) -m pip install --quiet --no-build-isolation --no-deps -e .
	$(PY) -c "import prismlab.kernels.ops as ops; assert ops.extension_available(), 'prismlab._C did not build'; print('prismlab._C built; CUDA kernels compiled:', ops.cuda_kernels_compiled())"
	@touch $@

# The peers benchmarks/bench_loader_photos.py runs beside prismlab's loader (MosaicML Streaming), in an
# environment of their own: they pin numpy below what prismlab takes.
bench-setup: .venv-bench/.installed

.venv-bench/.installed: requirements-bench.txt
	@echo "==> creating .venv-bench with the benchmarks' peers (requirements-bench.txt)"
	$(PYTHON) -m venv .venv-bench
	.venv-bench/bin/python -m pip install --quiet -r requirements-bench.txt
	@touch $@

$(DEMO_SHARDS)/test.manifest.json: | $(EXTENSION_STAMP)
	@echo "==> writing synthetic analog clocks as WebDataset shards in $(DEMO_SHARDS)"
	$(VENV)/bin/prismlab shards clocks --out $(DEMO_SHARDS) --size 64 --train 24000 --val 1000 --test 2000

demo: $(EXTENSION_STAMP) $(DEMO_SHARDS)/test.manifest.json
	@echo "==> training a clock-reading CNN on the CPU with Accelerate (a few minutes)"
	$(VENV)/bin/prismlab train configs/clock_demo.yaml run.out_dir=$(DEMO_RUNS) data.shards=$(DEMO_SHARDS) --resume never
	@echo "==> evaluating the best checkpoint on held-out clocks"
	$(VENV)/bin/prismlab eval $(DEMO_RUNS)/clock-demo --split test

test: $(EXTENSION_STAMP)
	@echo "==> lint and format check (ruff)"
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	@echo "==> running the test suite: tests/unit and tests/integration, the SLURM tests beside the rest"
	PRISMLAB_REQUIRE_EXTENSION=1 scripts/run_tests.sh $(PY) --durations=10

# The unit layer alone: no subprocess, no cluster, about a minute.
test-fast: $(EXTENSION_STAMP)
	PRISMLAB_REQUIRE_EXTENSION=1 $(PY) -m pytest -q tests/unit

# The GPU proof kit (README "On a GPU"): wheels an offline GPU node lacks, then the check itself.
gpu-wheels:
	scripts/gpu_wheels.sh .whl

gpu-check:
	scripts/gpu_check.sh gpu-check-out

clean:
	rm -rf build prismlab/_C*.so $(DEMO_SHARDS) $(DEMO_RUNS)
