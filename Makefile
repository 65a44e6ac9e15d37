# phiscale: `make demo` trains the embedded default; `make test` runs the test suite; `make docs` builds
# the documentation site into site/ (`$(BIN)/mkdocs serve` previews it).
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test docs lint bench clean
setup:
	@bash scripts/setup.sh

demo: setup
	$(BIN)/phiscale-train experiment=digits_demo

test: setup
	bash scripts/test.sh

docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/python benchmarks/loader.py
	$(BIN)/python benchmarks/overhead.py

clean:
	rm -rf outputs multirun .pytest_cache site
