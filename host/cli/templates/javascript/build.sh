#!/usr/bin/env bash
# Builds {{NAME}}.wasm, a WebAssembly component, from plugin.js with the pinned componentize-js
# the eshost checkout installs once, outside this project (ESHOST_HOME: the checkout).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
ESHOST_HOME="${ESHOST_HOME:-{{ESHOST_HOME}}}"
"$ESHOST_HOME/scripts/build-polyglot.sh" component javascript {{WORLD}} . plugin.js {{NAME}}.wasm
