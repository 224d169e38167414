#!/usr/bin/env bash
# Rebuilds the compatibility fixtures (tests/compat/v0.1.0/*.wasm, tests/compat/v0.1.1/*.wasm)
# from tests/compat/src. The committed bytes are what the tests load; rebuild only to add a
# fixture, never to make a failing compatibility test pass (that would hide the break the
# test exists to catch).
#
# Toolchain, pinned: rustc 1.95.0 with the wasm32-wasip2 target (tests/compat/src/
# rust-toolchain.toml; rustup installs it), wit-bindgen =0.61.1 (Cargo.toml, Cargo.lock),
# release profile opt-level "s", LTO, panic=abort, stripped. Paths are remapped, so the
# bytes do not depend on where the repository or the cargo registry live: a rebuild on
# another machine gives the same files (SHA256SUMS).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="$here/src"
target="${CARGO_TARGET_DIR_COMPAT:-${TMPDIR:-/tmp}/eshost-compat-target}"
registry="${CARGO_HOME:-$HOME/.cargo}/registry/src"

cd "$src"
toolchain="$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)"
if ! rustup target list --installed --toolchain "$toolchain" | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2 --toolchain "$toolchain"
fi

locked=()
[[ -f Cargo.lock ]] && locked=(--locked)
# Only the fixtures' own flags: nothing the caller's environment sets for other builds.
env -u RUSTFLAGS -u CARGO_BUILD_RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS \
    CARGO_TARGET_DIR="$target" \
    RUSTFLAGS="--remap-path-prefix=$src=/compat --remap-path-prefix=$registry=/registry" \
    cargo build --release --target wasm32-wasip2 "${locked[@]}"

out="$target/wasm32-wasip2/release"
cp "$out/compat_aggregate.wasm" "$here/v0.1.0/aggregate.wasm"
cp "$out/compat_upcaster.wasm" "$here/v0.1.0/upcaster.wasm"
cp "$out/compat_projection.wasm" "$here/v0.1.0/projection.wasm"
cp "$out/compat_projection_v0_1_1.wasm" "$here/v0.1.1/projection.wasm"

cd "$here"
sha256sum v0.1.0/*.wasm v0.1.1/*.wasm | tee SHA256SUMS
