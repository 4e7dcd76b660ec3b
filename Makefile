# Build, test and demo entry points. Every recipe runs under bash with -e -o pipefail,
# so any failing step fails the target.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := build

NODE_TEST_CONCURRENCY ?= 2
# No test may hang the suite: a test ends after NODE_TEST_TIMEOUT ms, and a file's process exits once its tests
# are done even if something it started is still open (the harness kills leftover servers on exit).
NODE_TEST_TIMEOUT ?= 240000
NODE_TEST_GUARDS := --test-timeout=$(NODE_TEST_TIMEOUT) --test-force-exit
NODE_TEST := node --test --test-concurrency=$(NODE_TEST_CONCURRENCY) $(NODE_TEST_GUARDS)
FERROCABLE_BIN ?= $(CURDIR)/target/debug/ferrocable
SOAK_SECONDS ?= 60

.PHONY: setup build test test-rust test-node node-addon demo ruby-ext ruby-bundle test-ruby rails-chat fuzz soak package test-package

setup:
	scripts/setup.sh

build:
	cargo build --workspace

# One pass builds each binary once: incremental caches would only double target/ (and the disk a fresh machine needs).
test: export CARGO_INCREMENTAL := 0
test: setup
	cargo test --workspace
	python3 -m unittest discover -s tests/load -p 'test_*.py'
	$(MAKE) --no-print-directory soak
	$(MAKE) --no-print-directory test-node
	$(MAKE) --no-print-directory test-ruby
	$(MAKE) --no-print-directory test-package

# The fuzz targets in core/fuzz (cargo-fuzz, nightly toolchain), each for FUZZ_SECONDS; not part of `make test`.
# cargo-fuzz is installed when missing. Findings are written to core/fuzz/artifacts/<target>/ and fail the run;
# the corpus grows in core/fuzz/corpus/<target>/ (both ignored by git). See docs/reliability.md, "Bad input".
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= client_frame binary_frame publication config_options config_toml
fuzz:
	cargo fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked
	rustup run nightly rustc --version >/dev/null 2>&1 || { echo "make fuzz needs the nightly toolchain (rustup toolchain install nightly)" >&2; exit 1; }
	cd core && for target in $(FUZZ_TARGETS); do \
	  case $$target in config_toml) dict=$(CURDIR)/core/fuzz/dicts/toml.dict ;; config_options|binary_frame) dict= ;; *) dict=$(CURDIR)/core/fuzz/dicts/json.dict ;; esac; \
	  cargo +nightly fuzz run $$target -- -max_total_time=$(FUZZ_SECONDS) -max_len=16384 -timeout=10 \
	    -print_final_stats=1 $${dict:+-dict=$$dict}; \
	done

# tests/node: the black-box suite against the debug binary (FERROCABLE_BIN may point at another build)
# and the in-process suite (test/inprocess-*.test.js) against the npm package with its debug addon; then the
# scenarios every RPC backend kind runs (RPC_SCENARIOS) again against the @anycable/serverless-js backend over
# HTTP RPC.
RPC_SCENARIOS := test/connection.test.js test/channels.test.js test/state.test.js
test-node: node-addon ruby-bundle
	cargo build -p ferrocable
	cd tests/node && FERROCABLE_BIN="$(FERROCABLE_BIN)" $(NODE_TEST) test/*.test.js
	cd tests/node && FERROCABLE_RPC_BACKEND=http FERROCABLE_BIN="$(FERROCABLE_BIN)" $(NODE_TEST) $(RPC_SCENARIOS)
	cd tests/node && FERROCABLE_BIN="$(FERROCABLE_BIN)" node_modules/.bin/vitest run --config conformance/vitest.config.mjs

# The soak scenario of the load tool for SOAK_SECONDS: the server binary (FERROCABLE_BIN) in RPC mode under client
# churn, steady broadcasts and backend restarts; fails on lost broadcasts, open files left behind, memory growth or
# panics. Logs go to target/soak.
soak:
	cargo build -p ferrocable -p ferrocable-bench
	target/debug/ferrocable-bench soak --duration $(SOAK_SECONDS) --server-bin "$(FERROCABLE_BIN)" --log-dir target/soak

# The npm package's native addon (ferrocable.<platform>.node next to index.js), debug build.
node-addon:
	npm run --silent build:debug

# The chat demo: a Node app serving one page, with Ferrocable embedded (examples/node-chat).
demo: setup
	npm run --silent build
	cd examples/node-chat && exec node server.js

# The Ruby gem's native extension (bindings-ruby, release build) into gems/ferrocable/lib.
ruby-ext:
	cd gems/ferrocable && rake compile

# The Ruby suite's bundle, resolved from Debian's gems offline, and the gem's extension: the Rails app of
# tests/ruby/dummy runs in both suites (tests/node runs it as one of its deployments).
ruby-bundle: ruby-ext
	cd tests/ruby && { bundle check >/dev/null 2>&1 || bundle lock --local >/dev/null; }

# tests/ruby: the gem's API in-process, and the dummy Rails app in Puma driven by websocket-driver and
# @rails/actioncable clients (minitest). The Gemfile is resolved from Debian's gems, offline.
test-ruby: ruby-bundle
	cd tests/ruby && bundle exec ruby -Itest -e 'Dir.glob("test/**/*_test.rb").sort.each { |f| require File.expand_path(f) }'

# Every package a user installs, into dist/: the npm package and its platform package (prebuilt addon and server
# binary), the source gem (compiles with Cargo when installed) and the precompiled platform gem. See scripts/package.sh.
package:
	scripts/package.sh

# The packages of dist/ installed the way users install them, into fresh folders outside the repository, with no
# Rust on PATH: a new npm project (ESM, CommonJS, types, `npx ferrocable`) and a new Rails app using the
# precompiled gem, each serving real clients. The source gem is installed too and compiles with Cargo; its build
# shares this run's target/ (CARGO_TARGET_DIR) so the dependencies built for `make package` are not rebuilt.
test-package: package
	cd tests/node && node --test --test-concurrency=1 $(NODE_TEST_GUARDS) package/*.test.js
	ruby tests/ruby/package/installed_gem_test.rb

# The Rails chat example (examples/rails-chat): Puma on :3000 with Ferrocable in-process on :8080.
# CABLE_ADAPTER=async serves the same app with plain Action Cable on Puma instead (for comparisons).
rails-chat: setup ruby-ext
	examples/rails-chat/bin/start
