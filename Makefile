# Two commands are all the set-up: `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
# The opt-in compiled codec (build_backend.py): a wheel installed into its own venv, never built
# in place (a compiled module beside its .py would shadow the .py for every run and edit).
# build/ is git-ignored and `make clean` removes it.
CVENV := build/venv-compiled
CSTAMP := $(CVENV)/.installed
KUSHI_SOURCES := $(shell find kushi -name '*.py')

.PHONY: serve serve-compiled test test-compiled bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e .
	touch $@

$(TEST_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# The wheel holds a copy of every module: any change to kushi rebuilds it (~20 s of mypyc and
# gcc here; the first build, with the venv and its dependencies, a few minutes).
$(CSTAMP): pyproject.toml setup.py build_backend.py $(KUSHI_SOURCES)
	test -x $(CVENV)/bin/python || { $(PYTHON) -m venv $(CVENV) && $(CVENV)/bin/pip install -q --upgrade pip; }
	KUSHI_COMPILE=1 $(CVENV)/bin/pip install -q '.[test]'   # (a local project: always reinstalled)
	# the repository last on that venv's path (a .pth: after site-packages), for the tests'
	# own package (tests.support); kushi itself comes from the wheel, found first
	echo "$(CURDIR)" > "$$($(CVENV)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/kushi-repository.pth"
	touch $@

# make serve ARGS="--log-level debug --ws none": extra flags for kushi serve
serve: $(STAMP)
	$(BIN)/kushi serve $(ARGS)

# kushi serve with the compiled codec (same ARGS)
serve-compiled: $(CSTAMP)
	$(CVENV)/bin/kushi serve $(ARGS)

test: $(TEST_STAMP)
	$(BIN)/python -m pytest -n auto -q
	$(MAKE) test-compiled

# The whole suite again against the compiled build: run by its pytest (no `python -m`, which
# would put the working directory, and its kushi, first on the path) and without pyproject's
# pythonpath; tests/protocol/test_compiled_build.py fails unless the extensions were the modules
# imported. (A test that starts `python -m kushi.ops.cli` in the repository runs the pure kushi
# there: the working directory comes first for -m.)
test-compiled: $(CSTAMP)
	KUSHI_EXPECT_COMPILED=1 $(CVENV)/bin/pytest -o pythonpath= -p no:cacheprovider -n auto -q

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) build .pytest_cache
