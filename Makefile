# phiscale: `make demo` trains the embedded default; `make test` runs the test suite.
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint bench clean
setup:
	@bash scripts/setup.sh

demo: setup
	$(BIN)/phiscale-train experiment=digits_demo

test: setup
	bash scripts/test.sh

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/python benchmarks/loader.py
	$(BIN)/python benchmarks/overhead.py

clean:
	rm -rf outputs multirun .pytest_cache
