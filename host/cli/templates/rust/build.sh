#!/usr/bin/env bash
# Builds {{NAME}}.wasm, a WebAssembly component, from this crate; `cargo test` runs the
# native harness tests, `eshost plugin test {{NAME}}.wasm --fixture cases.json` the component.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
toolchain="$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)"
if ! rustup target list --installed --toolchain "$toolchain" | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2 --toolchain "$toolchain"
fi
cargo build --release --target wasm32-wasip2
# Where cargo put it: ./target, or $CARGO_TARGET_DIR when set.
target_dir="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
cp "$target_dir/wasm32-wasip2/release/{{CRATE}}.wasm" {{NAME}}.wasm.tmp
mv -f {{NAME}}.wasm.tmp {{NAME}}.wasm
echo "built $(pwd)/{{NAME}}.wasm"
