#!/usr/bin/env bash
# Builds the Python and JavaScript plugins (examples/python, examples/javascript) and the
# polyglot test guests (tests/polyglot-guests) into WebAssembly components.
#
#   scripts/build-polyglot.sh            # install the pinned tools if needed, build what changed
#
# The tools live inside the project, pinned to exact versions:
#   examples/python/.venv            componentize-py  (pip, examples/python/requirements.txt)
#   examples/javascript/node_modules componentize-js + jco (npm, package.json + package-lock.json)
# Nothing is installed globally. A tool that cannot be installed fails the build, loudly.
#
# Output: $ESHOST_POLYGLOT_OUT (default target/polyglot/), one <name>.wasm per component and
# components.txt listing `name path` lines. A component is rebuilt only when its sources, the
# WIT contract or the tool versions change (a stamp file beside it records their hash), so a
# second run takes well under a second. Safe to run concurrently (a lock serialises runs).
#
# Needs: python3 (3.11+, with venv), node 20+ and npm, flock, sha256sum.
set -euo pipefail

COMPONENTIZE_PY_VERSION=0.25.1
COMPONENTIZE_JS_VERSION=0.23.0
JCO_VERSION=1.35.0
PREVIEW2_SHIM_VERSION=0.17.9

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${ESHOST_POLYGLOT_OUT:-$ROOT/target/polyglot}"
PY_DIR="$ROOT/examples/python"
JS_DIR="$ROOT/examples/javascript"
VENV="$PY_DIR/.venv"
# The contract a world is built against: the reactor world is 0.2's; the host serves the
# other worlds at 0.1.
wit_for() {
    if [[ "$1" == reactor-plugin ]]; then echo "$ROOT/wit/v0.2.0"; else echo "$ROOT/wit/v0.1.0"; fi
}

say() { printf 'build-polyglot: %s\n' "$*" >&2; }
die() {
    printf 'build-polyglot: error: %s\n' "$*" >&2
    exit 1
}

for tool in python3 node npm flock sha256sum; do
    command -v "$tool" >/dev/null || die "'$tool' is not installed; it is needed to build the polyglot plugins"
done

mkdir -p "$OUT"
exec 9>"$OUT/.lock"
flock 9

# ---- tools ---------------------------------------------------------------------------------

componentize_py() { "$VENV/bin/componentize-py" "$@"; }
componentize_js() { node "$JS_DIR/node_modules/@bytecodealliance/componentize-js/src/cli.js" "$@"; }

install_python_tools() {
    local want="componentize-py $COMPONENTIZE_PY_VERSION"
    if [[ -x "$VENV/bin/componentize-py" ]] && [[ "$(componentize_py --version 2>/dev/null)" == "$want" ]]; then
        return
    fi
    grep -qx "componentize-py==$COMPONENTIZE_PY_VERSION" "$PY_DIR/requirements.txt" ||
        die "examples/python/requirements.txt does not pin componentize-py==$COMPONENTIZE_PY_VERSION"
    say "installing $want into examples/python/.venv"
    python3 -m venv "$VENV" || die "cannot create the virtualenv $VENV (is python3-venv installed?)"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$PY_DIR/requirements.txt" ||
        die "pip could not install componentize-py==$COMPONENTIZE_PY_VERSION"
    [[ "$(componentize_py --version)" == "$want" ]] ||
        die "examples/python/.venv has '$(componentize_py --version)', expected '$want'"
}

installed_npm_version() {
    node -p "require('$JS_DIR/node_modules/$1/package.json').version" 2>/dev/null || true
}

# The npm packages the build needs, at the exact versions package.json pins. preview2-shim is
# listed because componentize-js imports it at run time without depending on it.
js_pins() {
    echo "@bytecodealliance/componentize-js $COMPONENTIZE_JS_VERSION"
    echo "@bytecodealliance/jco $JCO_VERSION"
    echo "@bytecodealliance/preview2-shim $PREVIEW2_SHIM_VERSION"
}

js_pins_installed() {
    local package version
    while read -r package version; do
        [[ "$(installed_npm_version "$package")" == "$version" ]] || return 1
    done < <(js_pins)
}

install_js_tools() {
    local stamp="$JS_DIR/node_modules/.eshost-lock.sha256"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$(sha256sum "$JS_DIR/package-lock.json" | cut -d' ' -f1)" ]] &&
        js_pins_installed; then
        return
    fi
    say "installing componentize-js $COMPONENTIZE_JS_VERSION and jco $JCO_VERSION into examples/javascript/node_modules"
    local package version
    while read -r package version; do
        grep -q "\"$package\": \"$version\"" "$JS_DIR/package.json" ||
            die "examples/javascript/package.json does not pin $package to exactly $version"
    done < <(js_pins)
    # `npm install`, not `npm ci`: the lock file cannot list the optional per-platform
    # binaries some registries do not serve, and `npm ci` refuses such a lock. The versions
    # come from package-lock.json all the same, and are checked below.
    (cd "$JS_DIR" && npm install --no-audit --no-fund --loglevel=error >&2) ||
        die "npm install failed in examples/javascript"
    while read -r package version; do
        local got
        got="$(installed_npm_version "$package")"
        [[ "$got" == "$version" ]] ||
            die "examples/javascript/node_modules has $package '$got', expected $version"
    done < <(js_pins)
    sha256sum "$JS_DIR/package-lock.json" | cut -d' ' -f1 >"$stamp"
}

# ---- components ----------------------------------------------------------------------------

# The hash of everything a component is built from: the tool versions, the contract, and the
# files of its source directory.
inputs_hash() {
    local language="$1" world="$2" src="$3"
    {
        echo "py=$COMPONENTIZE_PY_VERSION js=$COMPONENTIZE_JS_VERSION jco=$JCO_VERSION shim=$PREVIEW2_SHIM_VERSION $language $world"
        find "$(wit_for "$world")" "$src" -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 |
            LC_ALL=C sort -z | xargs -0 sha256sum
    } | sha256sum | cut -d' ' -f1
}

MANIFEST=""

# build NAME LANGUAGE WORLD SOURCE-DIR [ENTRY]
#   python:     SOURCE-DIR holds app.py (and any modules it imports)
#   javascript: ENTRY is the module's file inside SOURCE-DIR
build() {
    local name="$1" language="$2" world="$3" src="$ROOT/$4" entry="${5:-}"
    local wasm="$OUT/$name.wasm" stamp="$OUT/$name.wasm.inputs"
    local hash WIT
    WIT="$(wit_for "$world")"
    hash="$(inputs_hash "$language" "$world" "$src")"
    MANIFEST+="$name $wasm"$'\n'
    if [[ -f "$wasm" && -f "$stamp" && "$(cat "$stamp")" == "$hash" ]]; then
        return
    fi
    say "building $name ($language, world $world)"
    local started=$SECONDS tmp="$OUT/.$name.wasm.tmp"
    rm -f "$tmp" "$stamp"
    case "$language" in
        python)
            # Run from a scratch directory: componentize-py leaves __pycache__ beside sources.
            (cd "$OUT" && PYTHONDONTWRITEBYTECODE=1 componentize_py -d "$WIT" -w "$world" \
                componentize -p "$src" app -o "$tmp") >"$OUT/$name.log" 2>&1 ||
                die "componentize-py failed for $name:"$'\n'"$(tail -n 40 "$OUT/$name.log")"
            ;;
        javascript)
            componentize_js "$src/$entry" --wit "$WIT" --world-name "$world" \
                --disable http fetch-event -o "$tmp" >"$OUT/$name.log" 2>&1 ||
                die "componentize-js failed for $name:"$'\n'"$(tail -n 40 "$OUT/$name.log")"
            ;;
        *) die "unknown language $language" ;;
    esac
    [[ -s "$tmp" ]] || die "$name: the build produced no component"
    mv -f "$tmp" "$wasm"
    echo "$hash" >"$stamp"
    say "built $name in $((SECONDS - started)) s: $(du -h "$wasm" | cut -f1) $wasm"
}

# `build-polyglot.sh component LANGUAGE WORLD SOURCE-DIR ENTRY OUT.wasm`: one component from
# a project anywhere (`eshost plugin new` makes such projects), with the tools pinned here.
# ENTRY is the Python module (app) or the JavaScript file inside SOURCE-DIR.
if [[ "${1:-}" == component ]]; then
    [[ $# -eq 6 ]] || die "usage: build-polyglot.sh component python|javascript WORLD SOURCE-DIR ENTRY OUT.wasm"
    language="$2" world="$3" entry="$5" WIT="$(wit_for "$3")"
    src="$(cd "$4" && pwd)" || die "no directory $4"
    target="$(cd "$(dirname "$6")" && pwd)/$(basename "$6")" || die "no directory for $6"
    case "$language" in
        python) install_python_tools ;;
        javascript) install_js_tools ;;
        *) die "unknown language $language (python or javascript)" ;;
    esac
    tmp="$target.tmp" log="$target.log" stamp="$target.inputs"
    # The same sources with the same tools give the same plugin: skip the build, so that an
    # unchanged rebuild keeps the plugin's identity (componentize-py and componentize-js do
    # not build byte-reproducibly). The sources are the project's Python modules, or its
    # JavaScript modules and JSON, outside its dependencies, store and version control; delete
    # OUT.wasm.inputs to force a build.
    case "$language" in
        python) patterns=(-name '*.py') ;;
        *) patterns=(-name '*.js' -o -name '*.mjs' -o -name '*.cjs' -o -name '*.json') ;;
    esac
    hash="$(
        {
            echo "py=$COMPONENTIZE_PY_VERSION js=$COMPONENTIZE_JS_VERSION jco=$JCO_VERSION shim=$PREVIEW2_SHIM_VERSION $language $world $entry"
            find "$WIT" -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
            (cd "$src" && find . \( -name '.*' -o -name node_modules -o -name target -o -name __pycache__ -o -name data \) \
                ! -name . -prune -o -type f \( "${patterns[@]}" \) -print0 |
                LC_ALL=C sort -z | xargs -0 -r sha256sum)
        } | sha256sum | cut -d' ' -f1
    )"
    if [[ -f "$target" && -f "$stamp" && "$(cat "$stamp")" == "$hash" ]]; then
        say "$(basename "$target") is up to date (its sources and tools did not change)"
        exit 0
    fi
    rm -f "$tmp" "$stamp"
    started=$SECONDS
    case "$language" in
        python)
            (cd "$OUT" && PYTHONDONTWRITEBYTECODE=1 componentize_py -d "$WIT" -w "$world" \
                componentize -p "$src" "$entry" -o "$tmp") >"$log" 2>&1 ||
                die "componentize-py failed (log: $log):"$'\n'"$(tail -n 40 "$log")"
            ;;
        javascript)
            componentize_js "$src/$entry" --wit "$WIT" --world-name "$world" \
                --disable http fetch-event -o "$tmp" >"$log" 2>&1 ||
                die "componentize-js failed (log: $log):"$'\n'"$(tail -n 40 "$log")"
            ;;
    esac
    [[ -s "$tmp" ]] || die "the build produced no component"
    mv -f "$tmp" "$target"
    echo "$hash" >"$stamp"
    say "built $target in $((SECONDS - started)) s"
    exit 0
fi

install_python_tools
install_js_tools

build balances-py python projection-plugin examples/python/balances
build bank-account-py python aggregate-plugin examples/python/bank_account
build balances-js javascript projection-plugin examples/javascript/balances balances.js
build bank-account-js javascript aggregate-plugin examples/javascript/bank_account bank_account.js
build deposit-currency-py python upcaster-plugin examples/python/deposit_currency
build deposit-currency-js javascript upcaster-plugin examples/javascript/deposit_currency deposit_currency.js
build transfer-saga-py python reactor-plugin examples/python/transfer_saga
build hostile-py python projection-plugin tests/polyglot-guests/hostile-py

printf '%s' "$MANIFEST" >"$OUT/components.txt.tmp"
mv -f "$OUT/components.txt.tmp" "$OUT/components.txt"
say "components in $OUT (listed in components.txt)"
