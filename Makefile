# `make test` and `make demo` work on a fresh clone: they create .venv when missing and
# (re)install the project whenever pyproject.toml changes.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.mathrl-installed
PYTEST_ARGS ?=
# `make demo TASK=sum2`: the skill demo (two-digit sums) instead of single-digit sums.
TASK ?=

.PHONY: install test lint demo up clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[cpu,dev]'
	# pip pulls torchvision/torchaudio/torchcodec builds that do not match the CPU torch and
	# break imports of transformers' Qwen2 and vLLM; nothing here needs them.
	$(BIN)/pip uninstall -y -q torchvision torchaudio torchcodec || true
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/mathrl demo $(if $(TASK),--task $(TASK))

up: $(STAMP)
	$(BIN)/mathrl up

clean:
	rm -rf $(VENV) .mathrl runs
