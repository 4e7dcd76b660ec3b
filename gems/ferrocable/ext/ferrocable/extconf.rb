# frozen_string_literal: true

# Installing the source gem runs this: it writes a Makefile whose default target builds the native extension
# (crate ferrocable-ruby) and the standalone server binary (crate ferrocable) with Cargo from the Rust sources
# packed next to this file, and whose `install` target puts them where `require "ferrocable"` and the
# `ferrocable` executable find them. It needs nothing but Ruby's standard library, Cargo, and libclang (for the
# Ruby bindings); no gem is loaded. The precompiled platform gem does not run it.
#
# CARGO_TARGET_DIR, when set, is where Cargo builds (kept afterwards); otherwise a folder here that `make install`
# removes once the built files are copied out. CARGO picks the cargo command.
require "rbconfig"
require "shellwords"

manifest = File.join(__dir__, "Cargo.toml")
unless File.exist?(manifest)
  abort "ferrocable: the Rust sources of the extension are not in this gem (#{manifest} is missing). " \
    "Build the gems with `make package` in the Ferrocable repository, which packs them."
end

cargo = ENV.fetch("CARGO", "cargo")
unless system(*cargo.shellsplit, "--version", out: File::NULL, err: File::NULL)
  abort "ferrocable: `#{cargo}` not found. Installing the ferrocable source gem compiles its native extension: " \
    "install Rust (stable 1.85 or newer, https://rustup.rs) and libclang (Debian: libclang-dev), or install " \
    "the precompiled gem of your platform (x86_64-linux)."
end

own_target = ENV["CARGO_TARGET_DIR"].to_s.empty?
target_dir = own_target ? File.join(__dir__, "target") : File.expand_path(ENV["CARGO_TARGET_DIR"])
dlext = RbConfig::CONFIG["DLEXT"]
built_library = File.join(target_dir, "release",
  "libferrocable_ruby.#{RbConfig::CONFIG["host_os"].match?(/darwin/) ? "dylib" : "so"}")
built_binary = File.join(target_dir, "release", "ferrocable#{RbConfig::CONFIG["EXEEXT"]}")
q = ->(value) { value.to_s.shellescape }
# The release profile keeps line tables for backtraces; the installed copies drop them (a fifth of the size) when
# binutils' objcopy is there, as the precompiled gem's are.
objcopy = ENV.fetch("PATH", "").split(File::PATH_SEPARATOR).map { |dir| File.join(dir, "objcopy") }.find { |f| File.executable?(f) }
install_file = objcopy ? "#{q[objcopy]} --strip-debug" : "cp"

# `sitearchdir` is where RubyGems collects what `make install` writes (it overrides it on the command line's
# behalf through RbConfig); both files go under ferrocable/ there, the binary in ferrocable/bin/.
File.write("Makefile", <<~MAKEFILE)
  SHELL = /bin/sh
  sitearchdir = #{RbConfig::MAKEFILE_CONFIG["sitearchdir"]}
  CARGO = #{cargo}

  all:
  \tRUBY=#{q[RbConfig.ruby]} CARGO_TARGET_DIR=#{q[target_dir]} $(CARGO) build --release --locked \\
  \t  --manifest-path #{q[manifest]} -p ferrocable-ruby -p ferrocable --lib --bin ferrocable

  install: all
  \tmkdir -p $(sitearchdir)/ferrocable/bin
  \t#{install_file} #{q[built_library]} $(sitearchdir)/ferrocable/ferrocable_ruby.#{dlext}
  \t#{install_file} #{q[built_binary]} $(sitearchdir)/ferrocable/bin/ferrocable#{RbConfig::CONFIG["EXEEXT"]}
  #{own_target ? "\trm -rf #{q[target_dir]}" : ""}

  clean:
  #{own_target ? "\trm -rf #{q[target_dir]}" : "\t@:"}

  .PHONY: all install clean
MAKEFILE
