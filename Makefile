# Build, test and demo entry points. Every recipe runs under bash with -e -o pipefail,
# so any failing step fails the target.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := build

NODE_TEST_CONCURRENCY ?= 2
FERROCABLE_BIN ?= $(CURDIR)/target/debug/ferrocable

.PHONY: setup build test test-rust test-node node-addon demo

setup:
	scripts/setup.sh

build:
	cargo build --workspace

test: setup
	cargo test --workspace
	$(MAKE) --no-print-directory test-node

# tests/node: the black-box suite against the debug binary (FERROCABLE_BIN may point at another build)
# and the in-process suite (test/inprocess-*.test.js) against the npm package with its debug addon.
test-node: node-addon
	cargo build -p ferrocable
	cd tests/node && FERROCABLE_BIN="$(FERROCABLE_BIN)" node --test --test-concurrency=$(NODE_TEST_CONCURRENCY) test/*.test.js

# The npm package's native addon (ferrocable.<platform>.node next to index.js), debug build.
node-addon:
	npm run --silent build:debug

# The chat demo: a Node app serving one page, with Ferrocable embedded (examples/node-chat).
demo: setup
	npm run --silent build
	cd examples/node-chat && exec node server.js
