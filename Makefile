# redis-ratelimit: `make run` serves the module, `make test` tests everything.

PORT ?= 6379
CARGO ?= cargo
MODULE := target/release/libredis_ratelimit.so
BENCH_VENV := target/bench-venv
PREFIX ?= /usr/local
PACKAGE_DIR ?= target/package
# make package and make install build the release module, unless MODULE=…
# names a build to take as it is (the tests pack and install the debug one).
MODULE_BUILD := $(if $(filter command line,$(origin MODULE)),,build)

.DEFAULT_GOAL := help
.PHONY: help deps build run test test-matrix lint bench bench-instructions check-instructions package package-clients install clean

# The descriptions are the `## ` comments below, with $(PORT) shown as the
# port it stands for.
help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/\$$(PORT)/$(PORT)/g' | \
		awk -F':.*## ' '{printf "  make %-20s %s\n", $$1, $$2}'

deps: ## Install redis-server and libclang when missing (apt-get)
	@scripts/install-deps

build: deps ## Build the release module (target/release/libredis_ratelimit.so)
	$(CARGO) build --release

run: build ## Serve the module on 127.0.0.1:$(PORT) in the foreground until Ctrl-C (PORT=… for another port)
	@PORT=$(PORT) RATELIMIT_MODULE=$(CURDIR)/$(MODULE) scripts/run

test: deps ## Run every test: unit, property and against real servers
	@scripts/install-deps --test
	$(CARGO) build
	$(CARGO) test
	examples/python/run-tests
	examples/node/run-tests
	clients/run-tests

test-matrix: deps ## Run the tests against Redis 7.0, Valkey 8.1, Redis 6.2, 7.4 and 8.2 (SERVERS=… to pick)
	@scripts/install-deps --venv
	scripts/test-matrix

lint: ## Check formatting and run clippy with warnings as errors
	@scripts/install-deps --lint
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets --all-features -- -D warnings
	scripts/check-project

bench: build ## Throughput, latency and memory next to INCR and Lua (BENCH_QUICK=1: about a minute)
	@scripts/install-deps --venv
	$(CARGO) bench --bench decisions --features system-alloc -- $(if $(BENCH_QUICK),--warm-up-time 1 --measurement-time 2) | tee target/bench-decisions.txt
	python3 bench/run.py
	@mkdir -p bench/results && grep -E '^[a-z_:]+ +time:' target/bench-decisions.txt > bench/results/latest-decisions.txt
	@test -x $(BENCH_VENV)/bin/python || (python3 -m venv $(BENCH_VENV) && $(BENCH_VENV)/bin/pip install -q matplotlib)
	$(BENCH_VENV)/bin/python bench/plot.py

bench-instructions: build ## Instructions per request under callgrind, with and without a replica (bench/results/instructions.md)
	@scripts/install-deps --callgrind
	python3 bench/instructions.py

check-instructions: build ## Fail when a case costs over 5% more instructions than bench/budgets.json allows (CI runs it)
	@scripts/install-deps --callgrind
	python3 bench/instructions.py --check bench/budgets.json

package: $(MODULE_BUILD) ## Release tarball and SHA256SUMS in target/package/ (module, README, LICENSE, CHANGELOG)
	@scripts/package $(MODULE) $(PACKAGE_DIR)

install: $(MODULE_BUILD) ## Install the release module, stripped, into PREFIX/lib/redis/modules/ (PREFIX=/usr/local)
	install -d $(DESTDIR)$(PREFIX)/lib/redis/modules
	install -s -m 0755 $(MODULE) $(DESTDIR)$(PREFIX)/lib/redis/modules/libredis_ratelimit.so

package-clients: ## The client packages' Python wheel and sdist and npm tarball (target/clients/dist)
	clients/build

clean: ## Remove target/ (builds, virtualenvs, the servers of make test-matrix, logs) and the examples' and clients' node_modules
	rm -rf target examples/node/node_modules clients/node/node_modules
