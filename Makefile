# The two set-up commands of the README: `make run` (main job) and `make test` (tests).
# Both create .venv on first use; PyTorch comes from the pinned wheels (see pyproject.toml).
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test smoke standard clean-cache

$(BIN)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	touch $@

# Main job on the embedded default: data from the local mirror, teachers from the DVC remote
# committed in dvc-remote/, the smoke tier on the CPU, leaderboard in results/smoke/.
run: $(BIN)/.installed
	$(BIN)/dvc pull
	PATH=$(BIN):$$PATH $(BIN)/dvc repro leaderboard@smoke

# Unit tests, then the smoke tier's benchmark matrix (the command CI runs).
test: $(BIN)/.installed
	$(BIN)/dvc pull
	$(BIN)/pytest tests
	$(BIN)/pytest benchmarks -m smoke --benchmark-json=.benchmarks/smoke.json

standard: $(BIN)/.installed
	$(BIN)/slimbench run --tier standard

clean-cache:
	rm -rf .slimbench-cache
