#!/usr/bin/env bash
# Installs what building and testing Ferrocable needs on a Debian 12 machine (run as root).
# Idempotent and quick when everything is already in place: it only touches apt when a package
# is missing and only runs npm in a folder whose node_modules is missing or out of date (the npm
# package at the root, the Node test suite, the chat demo, the Ruby suite's Node clients).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

# System packages: a C toolchain and linker for cargo, pkg-config for native crates, and Chromium for
# the browser test of the chat demo (driven by playwright-core, which downloads no browser itself).
# The protobuf definitions are compiled by a pure-Rust compiler, so no protoc is needed.
apt_packages=(build-essential pkg-config ca-certificates chromium redis-server nats-server)
# The dead-peer test of the Node suite puts a client in a network namespace joined by a veth pair (`ip netns`).
apt_packages+=(iproute2)
# Ruby gem and its suite: Ruby 3.1 headers and libclang for the extension (magnus / rb-sys), and every gem
# the gem, its Rails integration, the dummy app and the Ruby suite use (no gem server is needed).
apt_packages+=(ruby ruby-dev libclang-dev rake ruby-bundler ruby-rails ruby-actioncable puma ruby-sqlite3
  ruby-minitest ruby-websocket-driver ruby-grpc ruby-grpc-tools ruby-google-protobuf)
missing=()
for pkg in "${apt_packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$pkg")
  fi
done
if ! command -v node >/dev/null 2>&1; then
  missing+=(nodejs npm)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  [ "$(id -u)" -eq 0 ] || die "missing packages (${missing[*]}); run this script as root or install them"
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Toolchains.
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (rustup, stable) and put cargo on PATH"
command -v node >/dev/null 2>&1 || die "node not found: install Node.js 20 or newer"
command -v npm >/dev/null 2>&1 || die "npm not found: install npm alongside Node.js"
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 20 ] || die "Node.js $(node --version) is too old: the test suite needs Node.js 20 or newer"

# npm dependencies of each Node folder; a stamp records the lockfile they were installed from.
npm_deps() {
  local dir="$1" what="$2" stamp want have
  [ -f "$dir/package.json" ] || return 0
  stamp="$dir/node_modules/.ferrocable-lock-sha"
  if [ -f "$dir/package-lock.json" ]; then
    want=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
  else
    want=$(sha256sum "$dir/package.json" | cut -d' ' -f1)
  fi
  have=$(cat "$stamp" 2>/dev/null || true)
  if [ ! -d "$dir/node_modules" ] || [ "$want" != "$have" ]; then
    say "installing $what"
    if [ -f "$dir/package-lock.json" ]; then
      (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    else
      (cd "$dir" && npm install --no-audit --no-fund --loglevel=error)
      want=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
    fi
    printf '%s\n' "$want" > "$stamp"
  fi
}
npm_deps "$root" "the npm package's build tools (@napi-rs/cli)"
npm_deps "$root/tests/node" "Node test dependencies"
npm_deps "$root/examples/node-chat" "the chat demo's dependencies"
npm_deps "$root/tests/ruby/node" "the Ruby suite's Node clients (@rails/actioncable)"

say "ok"
