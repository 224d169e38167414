#!/usr/bin/env bash
# The rebuild half of the development loop: whenever a source changes, build {{NAME}}.wasm
# and run its fixture. With `eshost run --config eshost.toml` running beside it
# (`watch_plugins = true`), every build that passes is hot-swapped in. Stop it with Ctrl-C.
#
#   ./watch.sh                      # looks once a second
#   ESHOST=/path/to/eshost ./watch.sh
#   ESHOST_WATCH_ROUNDS=1 ./watch.sh   # one round, then exit (for scripts)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
eshost="${ESHOST:-eshost}"
rounds="${ESHOST_WATCH_ROUNDS:-0}"

# What a build reads: the sources and the fixture, outside the store and build outputs.
sources() {
    find . \( -name data -o -name target -o -name node_modules -o -name '.*' \) ! -name . -prune \
        -o -type f \( -name '*.py' -o -name '*.js' -o -name '*.mjs' -o -name '*.rs' \
        -o -name Cargo.toml -o -name cases.json \) -print0 |
        LC_ALL=C sort -z | xargs -0 -r sha256sum | sha256sum
}

seen=""
round=0
while :; do
    now="$(sources)"
    if [[ "$now" != "$seen" ]]; then
        seen="$now"
        echo "== $(date +%T) building"
        if ./build.sh && "$eshost" plugin test {{NAME}}.wasm --fixture cases.json{{TEST_FLAGS}}; then
            echo "== $(date +%T) built, and the fixture passes"
        else
            echo "== $(date +%T) the build or the fixture failed: fix and save again"
        fi
    fi
    round=$((round + 1))
    if [[ "$rounds" -gt 0 && "$round" -ge "$rounds" ]]; then
        exit 0
    fi
    sleep 1
done
