# Two set-up commands (see README): `make demo` runs the main job, `make test` runs the tests.
# Both create .venv on first use. TORCH can be overridden, e.g. for a CUDA build on a GPU PC:
#   make demo TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
EXTRAS ?= test
BIN = $(VENV)/bin
STAMP = $(VENV)/.installed-$(EXTRAS)

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	# bioimage.io: the spec that core 0.11.0 pins breaks under current pydantic (docs/bioimageio.md)
	if $(BIN)/python -c "import bioimageio.core" 2>/dev/null; then \
	  $(BIN)/python -m pip install --quiet --no-deps "bioimageio.spec==0.5.14.3"; fi
	touch $@

demo: $(STAMP)
	$(BIN)/tcan-live demo

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/python -m pip install --quiet ruff mypy
	$(BIN)/ruff check tcan_live tests benchmarks tools
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m benchmarks.daemon --write-docs
	$(BIN)/python -m benchmarks.model --write-docs
	$(BIN)/python -m benchmarks.tuning --compile --write-docs
	$(BIN)/python -m benchmarks.nd2scan --write-docs
	$(BIN)/python -m benchmarks.storage --write-docs

clean:
	rm -rf $(VENV) .pytest_cache demo-output
