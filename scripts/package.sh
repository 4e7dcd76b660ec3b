#!/usr/bin/env bash
# Builds everything a user installs into dist/ (`make package`):
#   ferrocable-<v>.tgz                     npm: the JavaScript API, types and the `ferrocable` bin shim; the platform
#                                          packages are its optionalDependencies
#   ferrocable-<platform>-<v>.tgz          npm: this platform's prebuilt addon and standalone server binary
#   ferrocable-<v>.gem                     gem: Ruby code plus the Rust sources; compiles with Cargo when installed
#   ferrocable-<v>-<gem platform>.gem      gem: Ruby code, this platform's prebuilt extension and server binary
# Platform packages are built for the machine running this script when it is one we publish for (npm/<platform>/).
# One release build serves them all. Packages are assembled in target/package/ from the files they list, so a
# package holds nothing it does not name. CARGO_TARGET_DIR is honoured.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
say() { printf 'package: %s\n' "$*"; }
die() { printf 'package: error: %s\n' "$*" >&2; exit 1; }

target_dir=${CARGO_TARGET_DIR:-$root/target}
stage=$target_dir/package
dist=$root/dist

# One version everywhere: the Cargo workspace, the npm packages and the gem.
version=$(node -p 'require("./package.json").version')
gem_version=$(ruby -e 'require "./gems/ferrocable/lib/ferrocable/version"; print Ferrocable::VERSION')
cargo_version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
for other in "$gem_version" "$cargo_version" $(node -p 'require("fs").readdirSync("npm").map((p) => require(`./npm/${p}/package.json`).version).join(" ")'); do
  [ "$other" = "$version" ] || die "versions differ: package.json has $version, found $other (Cargo.toml, gems/ferrocable/lib/ferrocable/version.rb, npm/*/package.json)"
done

node_platform=$(node -p 'require("./lib/platform").platformSuffix()')
# The platform gem of the machine whose npm platform package we publish (npm/<platform>/); none elsewhere.
case "$node_platform" in
  linux-x64-gnu) gem_platform=x86_64-linux ;;
  *) gem_platform= ;;
esac

rm -rf "$stage" && mkdir -p "$stage" "$dist"
rm -f "$dist"/ferrocable-*.tgz "$dist"/ferrocable-*.gem

# Debug info stays in target/; the packages get stripped copies (a third of the size).
install_stripped() { objcopy --strip-debug "$1" "$2" && chmod 755 "$2"; }

if [ -n "$gem_platform" ]; then
  say "release build of the addon, the Ruby extension and the server binary ($node_platform)"
  # The same invocations as `npm run build`, `rake compile` and a plain build of the binary, so their outputs are
  # reused when those ran before.
  cargo build --release -p ferrocable-ruby
  cargo build --release -p ferrocable --bin ferrocable
  cargo build --release -p ferrocable-node
fi

# --- npm ------------------------------------------------------------------------------------------------------
if [ -n "$gem_platform" ]; then
  dir=$stage/npm/$node_platform
  mkdir -p "$dir"
  cp "npm/$node_platform/package.json" "npm/$node_platform/README.md" "$dir/"
  install_stripped "$target_dir/release/libferrocable_node.so" "$dir/ferrocable.$node_platform.node"
  install_stripped "$target_dir/release/ferrocable" "$dir/ferrocable"
  (cd "$dir" && npm pack --silent --pack-destination "$dist" >/dev/null)
fi

# The main package: the files package.json lists, and a package.json that names every platform package as an
# optional dependency (npm installs the one whose os/cpu/libc match) and leaves out the build scripts.
dir=$stage/npm/ferrocable
mkdir -p "$dir"
node -e '
  const fs = require("fs"), path = require("path")
  const [dir] = process.argv.slice(1)
  const pkg = JSON.parse(fs.readFileSync("package.json", "utf8"))
  for (const entry of pkg.files) fs.cpSync(entry, path.join(dir, entry), { recursive: true })
  fs.copyFileSync("README.md", path.join(dir, "README.md"))
  delete pkg.scripts
  delete pkg.devDependencies
  delete pkg.napi
  pkg.optionalDependencies = Object.fromEntries(
    fs.readdirSync("npm").sort().map((platform) => [`ferrocable-${platform}`, pkg.version]))
  fs.writeFileSync(path.join(dir, "package.json"), JSON.stringify(pkg, null, 2) + "\n")
' "$dir"
(cd "$dir" && npm pack --silent --pack-destination "$dist" >/dev/null)

# --- gems -----------------------------------------------------------------------------------------------------
# Both gems start from the gem's folder without anything built into it.
stage_gem() {
  local dir=$1
  mkdir -p "$dir"
  (cd gems/ferrocable && git ls-files -z --cached --others --exclude-standard . | xargs -0 cp --parents -t "$dir")
}

# The source gem carries the Rust crates the extension and the binary need, under crates/ in a workspace of their
# own with the repository's lockfile pruned to them (the extension builds with --locked). Being at other paths
# relative to their workspace than in the repository, they get other artifact names from Cargo, so a build of the
# gem sharing the repository's CARGO_TARGET_DIR reuses its registry dependencies but never overwrites, or
# takes, the repository's own crates (whose build script has its source path compiled in).
dir=$stage/gem-source
stage_gem "$dir"
ext=$dir/ext/ferrocable
mkdir -p "$ext/crates"
git ls-files -z --cached --others --exclude-standard core proto bindings-ruby ':!core/fuzz' ':!core/tests' |
  xargs -0 cp --parents -t "$ext/crates"
sed -e 's|^members = .*|members = ["crates/core", "crates/bindings-ruby"]|' -e '/^exclude = /d' \
  -e '/^# The fuzz targets/d' Cargo.toml > "$ext/Cargo.toml"
cp Cargo.lock "$ext/Cargo.lock"
# `cargo update -w` re-resolves only the workspace members: entries nothing here uses go, no version changes.
cargo update --workspace --offline --quiet --manifest-path "$ext/Cargo.toml"
(cd "$dir" && gem build --silent ferrocable.gemspec -o "$dist/ferrocable-$version.gem" >/dev/null)

if [ -n "$gem_platform" ]; then
  dir=$stage/gem-$gem_platform
  stage_gem "$dir"
  install_stripped "$target_dir/release/libferrocable_ruby.so" "$dir/lib/ferrocable/ferrocable_ruby.so"
  mkdir -p "$dir/lib/ferrocable/bin"
  install_stripped "$target_dir/release/ferrocable" "$dir/lib/ferrocable/bin/ferrocable"
  (cd "$dir" && FERROCABLE_GEM_PLATFORM=$gem_platform gem build --silent ferrocable.gemspec \
    -o "$dist/ferrocable-$version-$gem_platform.gem" >/dev/null)
fi

say "wrote $(cd "$dist" && ls ferrocable-*.tgz ferrocable-*.gem | tr '\n' ' ')to dist/"
