#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine as well as a prepared one.
#
# Installs what the tests drive and is missing: Prometheus (a real server for the
# error-rate gates, and promtool for the alerts, dashboard and metrics), gdb (stacks of
# a stuck test binary), Lua 5.4 (the Argo CD health check), and, in a virtual
# environment under target/, the Helm SDK and kubernetes-validate (the chart tests).
# Then runs every test of both crates. Arguments go to `cargo test`.
#
# A test whose tool is missing fails and names the command that installs it; none is
# skipped.
set -euo pipefail
cd "$(dirname "$0")"
root=$(pwd)

say() { printf -- '--- %s\n' "$*"; }
fail() { printf 'test.sh: %s\n' "$*" >&2; exit 1; }

# Debian packages, by a command each provides.
declare -A packages=([prometheus]=prometheus [promtool]=prometheus [gdb]=gdb [lua5.4]=lua5.4)
missing=()
for command in "${!packages[@]}"; do
    command -v "$command" >/dev/null || missing+=("${packages[$command]}")
done
if ((${#missing[@]})); then
    readarray -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    say "installing ${missing[*]}"
    if ((EUID == 0)); then
        apt=(apt-get)
    elif command -v sudo >/dev/null; then
        apt=(sudo apt-get)
    else
        fail "needs root to install ${missing[*]}: apt-get install -y ${missing[*]}"
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${apt[@]}" update -qq
    "${apt[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The kubectl tests drive the real client; Debian does not package it.
[[ -x /usr/bin/kubectl ]] ||
    fail "kubectl is required at /usr/bin/kubectl (https://kubernetes.io/docs/tasks/tools/install-kubectl-linux/)"

venv="$root/target/test-venv"
if ! "$venv/bin/python3" -c 'import helm_python, kubernetes_validate, jsonschema, yaml' 2>/dev/null; then
    say "installing the Helm SDK and kubernetes-validate into target/test-venv"
    command -v python3 >/dev/null || fail "needs Python 3: apt-get install -y python3 python3-venv"
    python3 -m venv "$venv" ||
        fail "cannot create a virtual environment: apt-get install -y python3-venv"
    "$venv/bin/pip" install -q --disable-pip-version-check helm-python-sdk kubernetes-validate
fi
export RINGFENCE_TEST_PYTHON="$venv/bin/python3"

say "cargo test --release $*"
cargo test --release "$@"
