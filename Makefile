# The two commands a newcomer needs:  make up   (run the platform)   make test   (run the tests)
.PHONY: install up test test-fast bench lint

install:
	scripts/bootstrap.sh

up: install
	.venv/bin/aintandem up

test: install
	scripts/test.sh

# Unit + API tests on SQLite only, no Docker/e2e: the quick loop while editing.
test-fast: install
	AINTANDEM_TEST_BACKENDS=sqlite .venv/bin/python -m pytest -q -m "not docker and not e2e"

bench: install
	scripts/test-services.sh
	.venv/bin/python -m bench

lint: install
	.venv/bin/ruff check . && .venv/bin/ruff format --check .
