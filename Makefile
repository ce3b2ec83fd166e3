# empathy-recipes: one make target per stage. `make help` lists them.
# Every DATASET / MODEL takes a Hub id or a local path.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
.DEFAULT_GOAL := help

VENV ?= .venv
PYTHON ?= $(VENV)/bin/python
PY_SYS ?= python3
MODELS_DIR ?= models
# Quiet pip: drop the "Location ... is ignored" noise of local mirrors, keep real errors.
PIP_FILTER := { grep -v "is ignored: it is neither a file nor a directory" || true; }
export TOKENIZERS_PARALLELISM ?= false

# Defaults shared by the stage targets; override on the command line (make sft RECIPE=... ACCELERATE=zero3).
ACCELERATE ?= single
ARGS ?=
# PROFILE=paper: every stage with the papers' code's settings (docs/fidelity.md); each script gets --profile $(PROFILE).
PROFILE ?=
PROFILE_ARG = $(if $(PROFILE),--profile $(PROFILE))

.PHONY: help install models test test-fast quality style sample-data clean \
	judge judge-agreement select sft moe synth synth-select synth-judge synth-study \
	generate eval-metrics eval-judge eval-winrate eval-human-export eval-human-score eval-report bench demo

help: ## list every target with one line each
	@grep -hE '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

## ---- setup ---------------------------------------------------------------------------------------------------
$(VENV)/.installed: pyproject.toml
	test -x $(PYTHON) || $(PY_SYS) -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip 2>&1 | $(PIP_FILTER)
	$(PYTHON) -m pip install -q -e '.[dev,ray]' 2>&1 | $(PIP_FILTER)
	touch $@

$(MODELS_DIR)/.prepared: $(VENV)/.installed src/empathy_recipes/models.py
	EMPATHY_RECIPES_MODELS=$(MODELS_DIR) $(PYTHON) -m empathy_recipes.models
	touch $@

install: $(VENV)/.installed $(MODELS_DIR)/.prepared ## create .venv with the pinned stack and prepare the embedded models (idempotent)
	@echo "ready: $(PYTHON) ; models in $(MODELS_DIR)/"

models: $(MODELS_DIR)/.prepared ## (re)prepare SmolLM2-135M-Instruct and the MiniLM link under models/

# The suite runs on PYTEST_WORKERS processes (pytest-xdist), one test file per worker at a time (--dist loadfile: a
# file's module fixtures, such as the demo run or the Ray cluster, start once), the slowest files first
# (tests/conftest.py); PYTEST_WORKERS=0: one process. TESTS picks files: make test TESTS="tests/test_moe.py".
PYTEST_WORKERS ?= 2
TESTS ?= tests
PYTEST = HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PYTHON) -m pytest $(TESTS) -q -n $(PYTEST_WORKERS) \
	--dist loadfile --no-loadscope-reorder
FAST_TESTS = not (integration or slow or server or ray or multiprocess)

test: ## the whole suite offline (unit + integration on the embedded models), 2 workers: 4 min 57 s measured on 2 cores
	$(PYTEST) $(ARGS)

test-fast: ## unit tests only (tiny random models, no child pipelines or servers): 38 s measured
	$(PYTEST) -m "$(FAST_TESTS)" $(ARGS)

quality: ## lint and format check (ruff, line length 119) and declared dependencies (deptry: every import declared, none unused)
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m deptry .

style: ## fix lint and format in place
	$(PYTHON) -m ruff check --fix .
	$(PYTHON) -m ruff format .

SOURCE ?= ../shared/data
sample-data: ## re-cut the shipped ED sample in data/ from the full ED files in SOURCE (default ../shared/data; seeded)
	$(PYTHON) scripts/make_sample.py --source $(SOURCE) --out data

clean: ## remove outputs/ and caches (keeps .venv and models)
	rm -rf outputs .pytest_cache .ruff_cache

## ---- Efficient-Empathy: judge and split -------------------------------------------------------------------------
# Judge and split. DATASET / MODEL: Hub id or local path (MODEL default: the embedded SmolLM2); BACKEND:
# transformers|vllm|openai; ARGS goes to the script (e.g. "--base-url http://localhost:8000/v1 --scoring generate
# --ray --hub-repo org/name --batch-size 64"; on GPUs "--tensor-parallel-size 4 --gpu-memory-utilization 0.9
# --max-model-len 4096 --dtype bfloat16 --replicas 2 --device cuda", the same on every LLM stage). Defaults: the
# shipped sample (with the paper's judge outputs). A killed run resumes when rerun with the same arguments.
.PHONY: bench-select
judge: ## score sensibility/rationality 0-10 with a distilabel LLM judge: DATASET OUTPUT_DIR MODEL BACKEND LIMIT ARGS
	$(PYTHON) distilabel_pipelines/judge_sensibility_rationality.py --dataset $(or $(DATASET),data/ed_valid_sample.jsonl) \
		--output-dir $(or $(OUTPUT_DIR),outputs/judged) $(if $(MODEL),--model $(MODEL)) $(if $(BACKEND),--backend $(BACKEND)) \
		$(if $(LIMIT),--limit $(LIMIT)) $(PROFILE_ARG) $(ARGS)

judge-agreement: ## Spearman/exact agreement of judged DATASET with its reference_judge_output (ARGS: --reference other)
	$(PYTHON) scripts/judge_agreement.py --dataset $(or $(DATASET),outputs/judged/default.jsonl) \
		--output $(or $(OUTPUT_DIR),outputs/judged)/agreement.json $(ARGS)

select: ## split DATASET into sensibility/rationality/discard/unscored at THRESHOLD (default 5): OUTPUT_DIR ARGS
	$(PYTHON) scripts/select_sets.py --dataset $(or $(DATASET),data/ed_valid_sample.jsonl) \
		--output-dir $(or $(OUTPUT_DIR),outputs/select) --threshold $(or $(THRESHOLD),5) $(ARGS)

bench-select: ## parse + split 1,000,000 judge outputs: ours (vectorised) vs a per-row loop (ARGS, e.g. --n 100000)
	$(PYTHON) -m bench.bench_select $(ARGS)


## ---- Efficient-Empathy: experts and MoE -------------------------------------------------------------------------

# SFT: RECIPE is any recipes/**/config_*.yaml; ACCELERATE picks accelerate_configs/<name>.yaml (single, ddp, zero2,
# zero3, fsdp, multi_node); ACCELERATE_ARGS goes to `accelerate launch` (e.g. --num_processes 4); ARGS overrides
# recipe fields (e.g. ARGS="--max_steps 5 --output_dir outputs/try").
RECIPE ?= recipes/smollm2-135m-instruct/sft/config_sensibility.yaml
ACCELERATE_ARGS ?=

sft: ## SFT an expert with TRL: RECIPE=<yaml> ACCELERATE=single|ddp|zero2|zero3|fsdp|multi_node ACCELERATE_ARGS ARGS
	$(VENV)/bin/accelerate launch --config_file accelerate_configs/$(ACCELERATE).yaml $(ACCELERATE_ARGS) \
		scripts/sft.py --config $(RECIPE) $(PROFILE_ARG) $(ARGS)

.PHONY: bench-sft
bench-sft: ## SFT real tokens per CPU second on ED: packing (or padding-free) vs padded batches, interleaved (ARGS)
	$(PYTHON) -m bench.bench_sft_packing $(ARGS)

# MoE: MOE_MODEL picks recipes/<model>/moe/ (template, router recipe) and the default experts and output dir.
MOE_MODEL ?= smollm2-135m-instruct
EXPERTS ?= outputs/experts/$(MOE_MODEL)-sensibility/merged outputs/experts/$(MOE_MODEL)-rationality/merged
PROMPT_SETS ?= outputs/select/sensibility outputs/select/rationality
GATE_MODE ?=
AVERAGE_BASE ?=
MOE_OUTPUT_DIR = $(or $(OUTPUT_DIR),outputs/moe/$(MOE_MODEL))

moe: ## mergekit Mixtral MoE from EXPERTS="a b" (path, Hub id, base+adapter); PROMPT_SETS GATE_MODE AVERAGE_BASE=1 OUTPUT_DIR
	$(PYTHON) scripts/build_moe.py --template recipes/$(MOE_MODEL)/moe/mergekit_moe.yaml \
		--experts $(EXPERTS) --prompt-sets $(PROMPT_SETS) --output-dir $(MOE_OUTPUT_DIR) \
		$(if $(GATE_MODE),--gate-mode $(GATE_MODE)) $(if $(filter 1 true yes,$(AVERAGE_BASE)),--average-base) $(ARGS)

.PHONY: moe-router
moe-router: ## train only the MoE's routers on all ED data via `make sft` (RECIPE default: recipes/<MOE_MODEL>/moe/config_router.yaml)
	$(MAKE) --no-print-directory sft \
		RECIPE=$(if $(filter command line,$(origin RECIPE)),$(RECIPE),recipes/$(MOE_MODEL)/moe/config_router.yaml)

## ---- Synth-Empathy ---------------------------------------------------------------------------------------------
# Synth-Empathy: every step writes under SYNTH_OUT (generated/, quality/, diversity/, judged/, study/, mix/).
# Models default to the embedded SmolLM2 (generator, discriminator, judge) and MiniLM (embedder); ARGS reaches every
# target's main script (e.g. ARGS="--backend vllm" for synth, ARGS=--recompute for the quality step of synth-select;
# DIVERSITY_ARGS for its diversity step).
SYNTH_OUT ?= outputs/synth
SYNTH_DATASET ?= data/ed_valid_sample.jsonl
SYNTH_MODEL ?=
SYNTH_LIMIT ?= 20
N_GEN ?= 5
DISCRIMINATOR ?=
EMBEDDER ?=
T ?= 60
RATIO ?= 0.9
JUDGE_MODEL ?=
JUDGE_DATA ?= $(SYNTH_OUT)/diversity/ranked.jsonl
JUDGE_GROUP ?= diversity_keep
JUDGE_LIMIT ?=
THRESHOLDS ?= 0,40,50,60,70
RATIOS ?= 0.5,0.7,0.9,1.0
ED_EVAL ?= data/ed_valid_sample.jsonl
ED_TRAIN ?= data/ed_valid_sample.jsonl
DIVERSITY_ARGS ?=

.PHONY: synth-mix bench-kcenter
synth: ## generate multi-round dialogues from ED: SYNTH_DATASET SYNTH_MODEL SYNTH_LIMIT N_GEN SYNTH_OUT ARGS
	$(PYTHON) distilabel_pipelines/synthesize_dialogues.py --dataset $(SYNTH_DATASET) \
		$(if $(SYNTH_MODEL),--model $(SYNTH_MODEL)) $(if $(SYNTH_LIMIT),--limit $(SYNTH_LIMIT)) \
		--num-generations $(N_GEN) --output-dir $(SYNTH_OUT)/generated $(ARGS)

synth-select: ## quality (cosine x100 >= T; scores reused when the manifest matches) then diversity (k-center keeps RATIO): DISCRIMINATOR EMBEDDER T RATIO
	$(PYTHON) scripts/synth_diversity_select.py --check-args --dataset $(SYNTH_OUT)/quality/selected.jsonl \
		$(if $(EMBEDDER),--embedder $(EMBEDDER)) --ratio $(RATIO) $(DIVERSITY_ARGS)
	$(PYTHON) scripts/synth_quality_select.py \
		--dataset $(SYNTH_OUT)/generated/examples.jsonl \
		$(if $(DISCRIMINATOR),--discriminator $(DISCRIMINATOR)) $(if $(EMBEDDER),--embedder $(EMBEDDER)) \
		--threshold $(T) --output-dir $(SYNTH_OUT)/quality $(PROFILE_ARG) $(ARGS)
	$(PYTHON) scripts/synth_diversity_select.py --dataset $(SYNTH_OUT)/quality/selected.jsonl --recompute \
		$(if $(EMBEDDER),--embedder $(EMBEDDER)) --ratio $(RATIO) --output-dir $(SYNTH_OUT)/diversity $(PROFILE_ARG) \
		$(DIVERSITY_ARGS)

synth-judge: ## 1-3 naturalness/coherence/empathy of JUDGE_DATA (synthetic or ED) per JUDGE_GROUP: JUDGE_MODEL JUDGE_LIMIT ARGS
	$(PYTHON) distilabel_pipelines/judge_dialogue_quality.py --dataset $(JUDGE_DATA) \
		$(if $(JUDGE_GROUP),--group-by $(JUDGE_GROUP)) $(if $(JUDGE_MODEL),--model $(JUDGE_MODEL)) \
		$(if $(JUDGE_LIMIT),--limit $(JUDGE_LIMIT)) --output-dir $(SYNTH_OUT)/judged $(PROFILE_ARG) $(ARGS)

synth-study: ## quantity-vs-quality sweep over THRESHOLDS x RATIOS (+ ED_EVAL): table and plot in SYNTH_OUT/study
	$(PYTHON) scripts/synth_study.py --examples $(SYNTH_OUT)/generated/examples.jsonl --ed $(ED_EVAL) \
		--thresholds $(THRESHOLDS) --ratios $(RATIOS) $(if $(DISCRIMINATOR),--discriminator $(DISCRIMINATOR)) \
		$(if $(EMBEDDER),--embedder $(EMBEDDER)) $(if $(JUDGE_MODEL),--judge-model $(JUDGE_MODEL)) \
		--output-dir $(SYNTH_OUT)/study $(PROFILE_ARG) $(ARGS)

synth-mix: ## training mix = selected synthetic + ED_TRAIN (common schema, source column) in SYNTH_OUT/mix, for make sft
	$(PYTHON) scripts/synth_build_mix.py --synthetic $(SYNTH_OUT)/diversity/selected.jsonl --ed $(ED_TRAIN) \
		--output $(SYNTH_OUT)/mix $(ARGS)

bench-kcenter: ## k-center greedy 8,000 x 384 vs the paper's way, N x N and matvec (identical picks), then 200,000 rows (ARGS)
	$(PYTHON) -m bench.bench_kcenter $(ARGS)


## ---- evaluation ------------------------------------------------------------------------------------------------
# Evaluation variables count only when given on the command line or in the environment (other sections share
# names such as MODEL or OUTPUT_DIR): $(call eval_arg,NAME,default).
eval_arg = $(if $(filter command line environment environment override,$(origin $(1))),$($(1)),$(2))
EVAL_DIR ?= outputs/eval

.PHONY: bench-generate bench-metrics
generate: ## one reply per ED test example: MODEL DATASET OUTPUT LIMIT BATCH_SIZE ARGS (--backend vllm|openai --base-url)
	$(PYTHON) evaluation/generate.py $(if $(call eval_arg,MODEL),--model $(call eval_arg,MODEL)) \
		--dataset $(call eval_arg,DATASET,data/ed_test_sample.jsonl) \
		--output $(call eval_arg,OUTPUT,$(EVAL_DIR)/predictions.jsonl) \
		$(if $(call eval_arg,LIMIT),--limit $(call eval_arg,LIMIT)) \
		$(if $(call eval_arg,BATCH_SIZE),--batch-size $(call eval_arg,BATCH_SIZE)) \
		$(PROFILE_ARG) $(ARGS)

eval-metrics: ## BLEU-1..4, Dist-1/2, ROUGE-1/2/L, F1 (+BERTScore with BERTSCORE=1): PREDICTIONS OUTPUT PREDICTION_COLUMN REFERENCE_COLUMN ARGS
	@test -n "$(PREDICTIONS)" || { echo "error: give PREDICTIONS=<jsonl from make generate>" >&2; exit 2; }
	$(PYTHON) evaluation/compute_metrics.py --predictions $(PREDICTIONS) \
		--output $(call eval_arg,OUTPUT,$(EVAL_DIR)/metrics/$(basename $(notdir $(PREDICTIONS))).json) \
		--prediction-column $(call eval_arg,PREDICTION_COLUMN,prediction) \
		--reference-column $(call eval_arg,REFERENCE_COLUMN,reference) \
		$(if $(filter 1 true yes,$(BERTSCORE)),--bertscore) $(ARGS)

eval-report: ## markdown table + bar chart of several models' metrics: METRICS="a.json b.json" or a dir, OUTPUT_DIR
	$(PYTHON) evaluation/report.py --metrics $(call eval_arg,METRICS,$(EVAL_DIR)/metrics) \
		--output-dir $(call eval_arg,OUTPUT_DIR,$(EVAL_DIR)/report)

eval-judge: ## LLM-judge ratings of predictions: PREDICTIONS RUBRIC=sensibility_rationality|quality MODEL OUTPUT_DIR LIMIT ARGS
	@test -n "$(PREDICTIONS)" || { echo "error: give PREDICTIONS=<jsonl from make generate>" >&2; exit 2; }
	$(PYTHON) distilabel_pipelines/judge_predictions.py --predictions $(PREDICTIONS) \
		--rubric $(call eval_arg,RUBRIC,sensibility_rationality) $(if $(call eval_arg,MODEL),--model $(call eval_arg,MODEL)) \
		--output-dir $(call eval_arg,OUTPUT_DIR,$(EVAL_DIR)/judge/$(basename $(notdir $(PREDICTIONS)))) \
		$(if $(call eval_arg,LIMIT),--limit $(call eval_arg,LIMIT)) $(PROFILE_ARG) $(ARGS)

eval-winrate: ## LLM-judge win rate of A vs B, both orders judged: PREDICTIONS_A PREDICTIONS_B MODEL OUTPUT_DIR LIMIT ARGS
	@test -n "$(PREDICTIONS_A)" -a -n "$(PREDICTIONS_B)" || { echo "error: give PREDICTIONS_A=... PREDICTIONS_B=..." >&2; exit 2; }
	$(PYTHON) distilabel_pipelines/pairwise_win_rate.py --predictions-a $(PREDICTIONS_A) --predictions-b $(PREDICTIONS_B) \
		$(if $(call eval_arg,MODEL),--model $(call eval_arg,MODEL)) \
		--output-dir $(call eval_arg,OUTPUT_DIR,$(EVAL_DIR)/winrate) $(if $(call eval_arg,LIMIT),--limit $(call eval_arg,LIMIT)) $(ARGS)

eval-human-export: ## blind A/B CSV sheets for annotators + hidden key: PREDICTIONS_A PREDICTIONS_B N ANNOTATORS OUTPUT_DIR ARGS
	@test -n "$(PREDICTIONS_A)" -a -n "$(PREDICTIONS_B)" || { echo "error: give PREDICTIONS_A=... PREDICTIONS_B=..." >&2; exit 2; }
	$(PYTHON) evaluation/human_eval.py export --predictions-a $(PREDICTIONS_A) --predictions-b $(PREDICTIONS_B) \
		--n $(call eval_arg,N,100) --annotators $(call eval_arg,ANNOTATORS,3) \
		--output-dir $(call eval_arg,OUTPUT_DIR,$(EVAL_DIR)/human) $(ARGS)

eval-human-score: ## per-criterion win/tie/loss and Fleiss' kappa from filled sheets: SHEETS (dir or files) KEY OUTPUT ARGS
	$(PYTHON) evaluation/human_eval.py score --sheets $(call eval_arg,SHEETS,$(EVAL_DIR)/human) \
		$(if $(call eval_arg,KEY),--key $(call eval_arg,KEY)) \
		--output $(call eval_arg,OUTPUT,$(EVAL_DIR)/human/results.json) $(ARGS)

bench-generate: ## batched vs one-at-a-time generation on SmolLM2, 64 ED test contexts, the generate stage's defaults (ARGS)
	$(PYTHON) -m bench.bench_generate $(ARGS)

bench-metrics: ## all metrics but BERTScore on 5,255 predictions: ours vs the paper's plain way
	$(PYTHON) -m bench.bench_metrics $(ARGS)

## ---- benchmarks and demo ---------------------------------------------------------------------------------------
DEMO_DIR ?= outputs/demo
FRESH ?=

demo: install ## the main job: every stage end to end on the embedded models (about 8 min on 2 cores, see README); FRESH=1 starts over
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PYTHON) scripts/demo.py --output-dir $(DEMO_DIR) \
		$(if $(filter 1 true yes,$(FRESH)),--fresh) $(ARGS)

.PHONY: gpu-check bench-sft-gpu
DEVICE ?= cuda
gpu-check: ## every stage on one device with a random model built here (DEVICE=cuda default, DEVICE=cpu): table + outputs/gpu-check/summary.json
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PYTHON) scripts/gpu_check.py --device $(DEVICE) $(ARGS)

bench-sft-gpu: ## LoRA SFT of a random Llama-3-8B-shaped model: tokens/s, peak memory, MFU, packed vs padded (CPU: --shape tiny)
	$(PYTHON) -m bench.bench_sft_gpu $(ARGS)

bench: ## every benchmark in bench/ at full size, one after another (each prints ratio=... seconds=...)
	for b in bench/bench_*.py; do echo "== $$b"; $(PYTHON) -m bench.$$(basename $$b .py); done

.PHONY: bench-check
bench-check: ## every benchmark once at small sizes beside a bounded CPU hog; fails if a goal is missed (~22 min)
	$(PYTHON) -m bench.check $(ARGS)
