# ticketlab: `make demo` runs the main job on built-in offline data, `make test` runs the tests.
# Both create .venv (with the CPU build of torch 2.13.0) if it is absent.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ticketlab-installed
export OMP_NUM_THREADS ?= 1

.PHONY: install demo test test-fast bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

# The main job: a short lottery experiment on built-in data (10 prunings of the digits MLP, rewinding to
# initialisation), a random-reinitialisation branch on every level, then the report table and plots.
DEMO := --preset digits_mlp --threads 1 --runs-dir runs/demo
demo: $(STAMP)
	$(BIN)/ticketlab lottery $(DEMO) --levels 10 --progress none > /dev/null
	$(BIN)/ticketlab branch $(DEMO) --levels 4-10 --branch reinit --progress none > /dev/null
	$(BIN)/ticketlab report runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# Speed (README "Speed"): each script prints its table and writes bench/results/<name>.json; CPU, one thread.
bench: $(STAMP)
	$(BIN)/python bench/trainer_overhead.py
	$(BIN)/python bench/imp_vs_user_loop.py
	$(BIN)/python bench/pruning_cost.py
	$(BIN)/python bench/dst_update.py
	$(BIN)/python bench/sweep_pool.py
	$(BIN)/python bench/inference.py
	$(BIN)/python bench/evaluation.py
	$(BIN)/python bench/noop_rerun.py
	$(BIN)/python bench/whole_job.py
	$(BIN)/python bench/gpu.py

clean:
	rm -rf runs/demo .pytest_cache
