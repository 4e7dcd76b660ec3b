# Build, test and demo entry points. Every recipe runs under bash with -e -o pipefail,
# so any failing step fails the target.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := build

NODE_TEST_CONCURRENCY ?= 2
FERROCABLE_BIN ?= $(CURDIR)/target/debug/ferrocable

.PHONY: setup build test test-rust test-node demo

setup:
	scripts/setup.sh

build:
	cargo build --workspace

test: setup
	cargo test --workspace
	$(MAKE) --no-print-directory test-node

# Black-box suite against the debug binary; FERROCABLE_BIN may point at another build.
test-node:
	cargo build -p ferrocable
	cd tests/node && FERROCABLE_BIN="$(FERROCABLE_BIN)" node --test --test-concurrency=$(NODE_TEST_CONCURRENCY) test/*.test.js

demo: setup
	cargo build --release -p ferrocable
	@echo 'Ferrocable in public mode: WebSocket clients connect to ws://localhost:8080/cable'
	@echo 'and subscribe with the identifier {"channel":"$$pubsub","stream_name":"chat"}.'
	@echo 'Broadcast to them from another terminal:'
	@echo '  curl -X POST localhost:8090/_broadcast -d '"'"'{"stream":"chat","data":"{\"text\":\"hi\"}"}'"'"
	@echo
	target/release/ferrocable --public --port 8080
