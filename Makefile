# The two set-up commands of the README: `make run` (main job) and `make test` (tests).
# Both create .venv on first use; PyTorch comes from the pinned wheels (see pyproject.toml).
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test fetch standard clean-cache

$(BIN)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	touch $@

# Raw data: re-imported from the mirror datasets.dvc names (../shared/datasets), hash checked by
# DVC; teachers: pulled from the DVC remote committed in dvc-remote/.
MIRROR := $(shell sed -n 's/^  path: //p' datasets.dvc | head -1)

fetch: $(BIN)/.installed
	@test -d "$(MIRROR)" || { echo "missing raw-data mirror $(MIRROR) (datasets.dvc imports from it); fix: clone next to shared/, or run \`$(BIN)/dvc import-url --force <folder> datasets\`" >&2; exit 1; }
	$(BIN)/dvc update -q datasets.dvc
	$(BIN)/dvc pull -q teacher

# Main job on the embedded default: data from the local mirror, teachers from the DVC remote
# committed in dvc-remote/, the smoke tier on the CPU, leaderboard in results/smoke/. Stages
# upstream of the benchmark rerun only when stale; the benchmark itself always runs.
run: fetch
	PATH=$(BIN):$$PATH $(BIN)/dvc repro data teacher
	PATH=$(BIN):$$PATH $(BIN)/dvc repro --force --single-item bench@smoke
	PATH=$(BIN):$$PATH $(BIN)/dvc repro leaderboard@smoke readme@smoke teachers_table

# Unit tests, then the smoke tier's benchmark matrix (the command CI runs).
test: fetch
	$(BIN)/pytest tests
	$(BIN)/pytest benchmarks -m smoke --benchmark-json=.benchmarks/smoke.json

standard: $(BIN)/.installed
	$(BIN)/slimbench run --tier standard

clean-cache:
	rm -rf .slimbench-cache
