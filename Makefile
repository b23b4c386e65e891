# fence: `make demo` brings a node up, `make test` runs every test. Both do all the set-up first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
STACK ?= fence/stack:bookworm
export FENCE_TEST_IMAGE := $(STACK)

.PHONY: test demo cluster-demo cluster-demo-down bench engine venv stack services clean

test: engine venv stack services
	$(VENV)/bin/python -m pytest -rs $(PYTEST_ARGS)

demo: engine venv stack services
	bash scripts/demo

# A 3-node cluster on this machine (main engine = controller, two extra engines as workers), left up;
# `make cluster-demo-down` removes it and leaves the main engine as it was.
cluster-demo: engine venv stack
	bash scripts/cluster-demo

cluster-demo-down: venv
	bash scripts/cluster-demo-down

# Benchmarks beside raw Docker (not part of `make test`); BENCH_ARGS="--reps 3" to shorten.
bench: engine venv stack services
	$(VENV)/bin/python -m bench $(BENCH_ARGS)

engine:
	bash scripts/ensure-engine

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

# The stack image is built once from Debian packages; delete it (docker rmi) to rebuild.
stack: engine venv
	@if docker image inspect $(STACK) >/dev/null 2>&1; then \
		echo "-----> Stack image $(STACK) is present"; \
	else \
		$(VENV)/bin/kato image build --tag $(STACK); \
	fi

# Service images (issue 16) are derived from the stack (its packages plus the service's), each
# built once, in seconds; delete one (docker rmi) to rebuild it.
SERVICE_TYPES ?= postgresql redis mysql
services: stack
	@for type in $(SERVICE_TYPES); do \
		if docker image inspect fence/service-$$type:bookworm >/dev/null 2>&1; then \
			echo "-----> Service image fence/service-$$type:bookworm is present"; \
		else \
			$(VENV)/bin/kato image build --service $$type || exit 1; \
		fi; \
	done

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
