# vitcls: `make test` and `make book` bootstrap .venv through constraints.txt.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test book toy-model sample-efficiency venv clean-venv benchmark reference-outputs \
	paper-dry-run

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	$(PY) -c "import vitcls_utils._compat as c; print('installed', c.install_pth())"
	touch $(STAMP)

# Two pytest workers (a test file, or a notebook, stays on one), one thread each: most of the
# suite is kernels, papermill and small tensors, which two cores serve better side by side
# than one two-threaded process (measured: 554 s against 797 s).
TEST_WORKERS ?= 2
test: $(STAMP)
	TQDM_DISABLE=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -q -n $(TEST_WORKERS) \
		--dist loadfile tests notebooks --nbval-lax \
		--nbval-sanitize-with notebooks/nbval_sanitize.cfg

# Refresh the headline outputs stored in notebooks/ (nbval's reference) after a deliberate change.
reference-outputs: $(STAMP)
	TQDM_DISABLE=1 $(PY) -m vitcls_utils.running.reference_outputs

book: $(STAMP)
	$(VENV)/bin/python -m vitcls_utils.report.models_page > book/generated/variants_table.md
	$(VENV)/bin/python -m vitcls_utils.report.families_page > book/generated/families_table.md
	TQDM_DISABLE=1 $(VENV)/bin/vitcls run --config data/runs/toy.yml --jobs 2
	$(VENV)/bin/jupyter-book build . --warningiserror --nitpick --keep-going
	@echo "The book is at $(CURDIR)/_build/html/index.html"

# Every notebook for the seven architectures and their controls, under both profiles, on random
# weights files and fabricated data, then the book of it (_dryrun/site/_build/html).
paper-dry-run: $(STAMP)
	TQDM_DISABLE=1 $(PY) -m vitcls_utils.running.dry_run --out _dryrun --jobs 2

toy-model: $(STAMP)
	$(PY) -m vitcls_utils.training.toy_models --out data/toy

# Chapter 7's Table 2, scaled: the toy DeiT and ConViT on fractions of the toy training set
# (same steps), into data/toy/sample_efficiency.json; resumes, and reuses the f = 1 checkpoints.
sample-efficiency: $(STAMP)
	TQDM_DISABLE=1 $(PY) -m vitcls_utils.training.sample_efficiency

benchmark: $(STAMP)
	$(PY) benchmarks/extract_overhead.py
	$(PY) benchmarks/memories_analyses.py
	$(PY) benchmarks/explain_probes.py

clean-venv:
	rm -rf $(VENV)
