# The two commands of the README. Both set everything up first (scripts/bootstrap.sh, idempotent).
.PHONY: demo test lint bootstrap

VENV ?= .venv

bootstrap:
	bash scripts/bootstrap.sh

demo: bootstrap
	$(VENV)/bin/nnunetv2_cipa demo

test: bootstrap
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest

lint: bootstrap
	$(VENV)/bin/ruff check .
