# Every target creates .venv (in the repository root) when it is missing and
# installs the pinned versions from constraints.txt into it.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DOCS_STAMP := $(VENV)/.installed-docs
PYTEST_WORKERS ?= 2

.PHONY: install test lint demo bench docs notebook clean

# pip shows what it downloads and installs as it goes (no --quiet, a progress bar): the
# first install downloads torch and JAX, the slow part.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "make: installing jaxseq + torchseq (editable) with the torch, dev, examples, bench and rl extras into $(VENV), pinned by constraints.txt"
	$(PY) -m pip install --progress-bar on -c constraints.txt -e '.[torch,dev,examples,bench,rl]'
	touch $(STAMP)

# The docs extra (Sphinx, myst-nb, jupytext, nbclient, ipykernel; about 70 small
# packages on top of the rest): `make docs` needs it, and so does `make test`, whose
# tests/test_docs_site.py builds the site and runs the tutorial notebook.
$(DOCS_STAMP): $(STAMP)
	@echo "make: installing the docs extra (Sphinx, myst-nb, jupytext, nbclient, ipykernel) into $(VENV)"
	$(PY) -m pip install --progress-bar on -c constraints.txt -e '.[torch,dev,examples,bench,rl,docs]'
	touch $(DOCS_STAMP)

install: $(STAMP)

test: $(STAMP) $(DOCS_STAMP)
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --durations=30

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

demo: $(STAMP)
	$(PY) examples/classify.py --out runs/demo

# Twice: with glibc's default allocator settings, and with freed memory retained for reuse
# (jaxseq.retain_host_memory(), process-wide, so every framework runs under it).
bench: $(STAMP)
	$(PY) -m benchmarks.run --out runs/bench
	$(PY) -m benchmarks.run --host-memory retain --no-streaming --out runs/bench_retain

# The documentation site, offline, into docs/_build/html: the tutorial executed, the API
# reference from docstrings, the examples gallery. Warnings fail the build. -E: read every
# page again, since Sphinx does not see a changed docstring in a module.
# Sphinx reports each phase and page as it goes (no -Q); the one long step without output
# runs the tutorial, between "tutorial.md: Executing notebook" and "Executed notebook in".
docs: $(DOCS_STAMP)
	@echo "make docs: building docs/ into docs/_build/html (the API pages import every module; the tutorial is executed)"
	$(PY) -m sphinx -E -W --keep-going -b html -d docs/_build/doctrees docs docs/_build/html
	@echo "make docs: done, open docs/_build/html/index.html"

# The tutorial as a Jupyter notebook, generated from docs/tutorial.md with jupytext.
notebook: $(DOCS_STAMP)
	$(PY) docs/_ext/tutorial_nb.py docs/tutorial.md docs/_build/tutorial.ipynb

clean:
	rm -rf $(VENV) runs .pytest_cache docs/_build
