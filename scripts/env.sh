# Sourced by the project's scripts: the pinned toolchain with its wasm target, and one warm
# target directory shared by every clone (wasmtime takes minutes to build from scratch).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/eshost/target}"
toolchain="$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)"
# RUSTUP_AUTO_INSTALL=0 machines never add the toolchain file's targets by themselves.
if ! rustup toolchain list | grep -q "^$toolchain"; then
  rustup toolchain install "$toolchain" --profile minimal --component rustfmt,clippy
fi
if ! rustup target list --installed --toolchain "$toolchain" | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2 --toolchain "$toolchain"
fi
if ! rustup component list --installed --toolchain "$toolchain" | grep -q '^clippy'; then
  rustup component add rustfmt clippy --toolchain "$toolchain"
fi
