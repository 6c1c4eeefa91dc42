# vitcls: `make test` and `make book` bootstrap .venv through constraints.txt.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test book toy-model venv clean-venv benchmark

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	$(PY) -c "import vitcls_utils._compat as c; print('installed', c.install_pth())"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

book: $(STAMP)
	@echo "make book: the book pipeline (papermill runs + jupyter-book build) is not built yet (issue #4)." >&2
	@echo "Until then, use 'make test' and the 'vitcls' command in .venv/bin." >&2
	@exit 2

toy-model: $(STAMP)
	$(PY) -m vitcls_utils.toy --out data/toy

benchmark: $(STAMP)
	$(PY) benchmarks/extract_overhead.py

clean-venv:
	rm -rf $(VENV)
