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
# make bench writes to target/bench/, outside the repository's files;
# BENCH_SAVE=1 refreshes the committed results in bench/results/ instead.
BENCH_OUT := $(if $(BENCH_SAVE),bench/results,target/bench)
ifneq ($(and $(BENCH_SAVE),$(BENCH_QUICK)),)
$(error BENCH_SAVE=1 keeps full runs only: leave BENCH_QUICK out)
endif

.DEFAULT_GOAL := help
.PHONY: help deps build run test test-matrix lint docs bench bench-instructions check-instructions bench-clients package package-clients install clean

# The descriptions are the `## ` comments below, with $(PORT) shown as the
# port it stands for, in one column as wide as the longest target needs.
help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/\$$(PORT)/$(PORT)/g' | \
		awk -F':.*## ' '{name[NR] = $$1; text[NR] = $$2; if (length($$1) > width) width = length($$1)} \
			END {format = "  make %-" width "s  %s\n"; for (i = 1; i <= NR; i++) printf format, name[i], text[i]}'

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

docs: deps ## Rewrite the version the docs quote (MODULE LIST, INFO, the load log line) from Cargo.toml's
	RATELIMIT_UPDATE_DOCS=1 $(CARGO) test --test docs docs_quote_cargo_tomls_version

bench: build ## Throughput, latency and memory next to INCR and Lua, in target/bench/ (BENCH_QUICK=1: about a minute; BENCH_SAVE=1: into bench/results/)
	@scripts/install-deps --venv
	@mkdir -p target $(BENCH_OUT)
	$(CARGO) bench --bench decisions --features system-alloc -- $(if $(BENCH_QUICK),--warm-up-time 1 --measurement-time 2) | tee target/bench-decisions.txt
	BENCH_OUT=$(BENCH_OUT) python3 bench/run.py
	@grep -E '^[a-z_:]+ +time:' target/bench-decisions.txt > $(BENCH_OUT)/latest-decisions.txt
	@test -x $(BENCH_VENV)/bin/python || (python3 -m venv $(BENCH_VENV) && $(BENCH_VENV)/bin/pip install -q matplotlib)
	BENCH_OUT=$(BENCH_OUT) $(BENCH_VENV)/bin/python bench/plot.py

bench-instructions: build ## Instructions per request under callgrind, with and without a replica (bench/results/instructions.md)
	@scripts/install-deps --callgrind
	python3 bench/instructions.py

check-instructions: build ## Fail when a case costs over 5% more instructions than bench/budgets.json allows (CI runs it)
	@scripts/install-deps --callgrind
	python3 bench/instructions.py --check bench/budgets.json

bench-clients: build ## A decision through each client package vs the raw client sending the same command (bench/results/clients*.txt)
	clients/run-tests python --collect-only >/dev/null
	(cd clients/node && npm ci --no-audit --no-fund --loglevel=error)
	target/clients/venv/bin/python bench/clients.py
	node bench/clients.mjs

package: $(MODULE_BUILD) ## Release tarball and SHA256SUMS in target/package/ (the module, README and the documents it links to)
	@scripts/package $(MODULE) $(PACKAGE_DIR)

# The installed module is stripped as the packaged one is: the symbol
# table and debug information are for debuggers, not for the server.
install: $(MODULE_BUILD) ## Install the stripped release module into PREFIX/lib/redis/modules/ (PREFIX=/usr/local)
	install -d $(DESTDIR)$(PREFIX)/lib/redis/modules
	strip --strip-unneeded -o $(DESTDIR)$(PREFIX)/lib/redis/modules/libredis_ratelimit.so $(MODULE)
	chmod 0755 $(DESTDIR)$(PREFIX)/lib/redis/modules/libredis_ratelimit.so

package-clients: ## The client packages' Python wheel and sdist and npm tarball (target/clients/dist)
	clients/build

clean: ## Remove what the builds and make test made: target/ (builds, virtualenvs, servers, logs) and node_modules/
	rm -rf target examples/node/node_modules examples/python/__pycache__ clients/node/node_modules
