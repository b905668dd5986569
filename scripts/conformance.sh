#!/usr/bin/env bash
# Conformance of a real planbox server to its HTTP contracts, by schema-driven fuzzing.
#
# What a green run proves, against `planbox serve --demo` (the fixture feeds, so
# /search answers real events) on a free loopback port:
#   1. assets/openapi.yaml and assets/openapi-upstream.yaml are valid OpenAPI 3.0
#      documents, and GET /openapi.yaml serves assets/openapi.yaml byte for byte.
#   2. GET /search conforms to the UPSTREAM spec under every schemathesis check
#      (`--checks all`): no 5xx, only documented status codes, content types and
#      headers, response bodies valid against the schemas (formats included),
#      schema-valid requests accepted, schema-violating requests rejected, 405 with
#      `Allow` for undeclared methods. The one reinterpretation is
#      scripts/conformance_hooks.py: upstream's `format: time` is read as
#      provider-local HH:MM:SS, as PRODUCT.md section 3 says (see that file).
#   3. Every path of planbox's own document (assets/openapi.yaml) conforms under
#      the same checks; the hooks only name the valid values of `provider` (the
#      demo box's provider names, CONFORMANCE_PROVIDERS), which the document
#      cannot list because they are configuration.
# Runs are reproducible: pinned tools (scripts/requirements-conformance.txt), a fixed
# seed, a bounded number of examples, one worker, no cache between runs
# (scripts/schemathesis.toml). Exits non-zero when anything above fails.
#
# Needs: a release build (`cargo build --release`), python3 >= 3.11, PyPI access the
# first time a venv is made.
#
# Environment:
#   PLANBOX_BIN                        binary to test (default target/release/planbox)
#   PLANBOX_CONFORMANCE_VENV           reuse (or create) this venv instead of a throwaway one
#   PLANBOX_CONFORMANCE_MAX_EXAMPLES   test cases per operation and phase (default 200)
#   PLANBOX_CONFORMANCE_SEED           schemathesis seed (default 20210630)
#   PLANBOX_CONFORMANCE_REPORT_DIR     if set, JUnit XML reports are written there
#   PYTHON                             interpreter used to make the venv (default python3)
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${PLANBOX_BIN:-$repo_root/target/release/planbox}
max_examples=${PLANBOX_CONFORMANCE_MAX_EXAMPLES:-200}
seed=${PLANBOX_CONFORMANCE_SEED:-20210630}
python=${PYTHON:-python3}
ready_timeout=30

log() { printf 'conformance: %s\n' "$*" >&2; }

if [[ ! -x "$bin" ]]; then
    log "no planbox binary at $bin (run 'cargo build --release' or set PLANBOX_BIN)"
    exit 2
fi
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    log "$python is older than 3.11, which schemathesis 4 needs (set PYTHON)"
    exit 2
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/planbox-conformance.XXXXXX")
server_pid=""

cleanup() {
    local status=$?
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- tools -------------------------------------------------------------------
venv=${PLANBOX_CONFORMANCE_VENV:-$work/venv}
[[ "$venv" == /* ]] || venv=$PWD/$venv
report_dir=${PLANBOX_CONFORMANCE_REPORT_DIR:-}
[[ -z "$report_dir" || "$report_dir" == /* ]] || report_dir=$PWD/$report_dir
if [[ ! -x "$venv/bin/python" ]]; then
    log "creating venv $venv"
    "$python" -m venv "$venv"
fi
log "installing pinned tools into $venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "$repo_root/scripts/requirements-conformance.txt"
log "$("$venv/bin/st" --version)"

"$venv/bin/openapi-spec-validator" \
    "$repo_root/assets/openapi.yaml" "$repo_root/assets/openapi-upstream.yaml"

# --- server ------------------------------------------------------------------
port=$("$venv/bin/python" -c '
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()')
base_url="http://127.0.0.1:$port"

log "starting $bin serve --demo on $base_url"
"$bin" serve --demo --listen "127.0.0.1:$port" --db "$work/planbox.db" \
    >"$work/server.log" 2>&1 &
server_pid=$!

# Ready (GET /ready is 200), then the first demo fetch has landed (/search has events),
# all within $ready_timeout seconds: a run over an empty store would not exercise the
# event schema at all.
if ! "$venv/bin/python" - "$base_url" "$ready_timeout" "$server_pid" <<'PY'; then
import json, os, sys, time, urllib.request

base, timeout, pid = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
deadline = time.monotonic() + timeout

def get(path):
    try:
        with urllib.request.urlopen(base + path, timeout=2) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except OSError:
        return None, b""

def alive():
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # an exited child stays a zombie until the shell reaps it
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True

stage = "/ready"
while time.monotonic() < deadline and alive():
    if stage == "/ready":
        status, _ = get("/ready")
        if status == 200:
            stage = "/search"
            continue
    else:
        status, body = get("/search")
        try:
            if status == 200 and json.loads(body)["data"]["events"]:
                sys.exit(0)
        except (ValueError, KeyError, TypeError):
            pass  # not the envelope (yet): keep waiting, the fuzzer will say what is wrong
    time.sleep(0.2)
what = "GET /ready to return 200" if stage == "/ready" else "GET /search to return events"
if alive():
    print(f"conformance: gave up after {timeout:.0f} s waiting for {what}", file=sys.stderr)
else:
    print(f"conformance: planbox exited while waiting for {what}", file=sys.stderr)
sys.exit(1)
PY
    log "server log:"
    cat "$work/server.log" >&2
    exit 1
fi
log "server ready"

"$venv/bin/python" - "$base_url/openapi.yaml" "$repo_root/assets/openapi.yaml" <<'PY'
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=5) as response:
    served = response.read()
with open(sys.argv[2], "rb") as f:
    expected = f.read()
if served != expected:
    sys.exit(f"conformance: GET /openapi.yaml differs from {sys.argv[2]}")
PY

# --- fuzzing -----------------------------------------------------------------
failed=()
run_schemathesis() {
    local label=$1 spec=$2
    local report_args=()
    if [[ -n "$report_dir" ]]; then
        mkdir -p "$report_dir"
        report_args=(--report junit --report-junit-path "$report_dir/schemathesis-$label.xml")
    fi
    log "schemathesis against $label spec ($spec)"
    # Run from the throwaway directory: schemathesis and hypothesis write state to the cwd.
    if ! (cd "$work" && SCHEMATHESIS_HOOKS="$repo_root/scripts/conformance_hooks.py" \
        "$venv/bin/st" --config-file "$repo_root/scripts/schemathesis.toml" \
        run "$spec" \
        --url "$base_url" \
        --checks all \
        --phases examples,coverage,fuzzing,stateful \
        --max-examples "$max_examples" \
        --seed "$seed" \
        --generation-database none \
        --workers 1 \
        --request-timeout 10 \
        --no-color \
        ${report_args[@]+"${report_args[@]}"}); then
        failed+=("$label")
    fi
}

run_schemathesis upstream "$repo_root/assets/openapi-upstream.yaml"
run_schemathesis planbox "$repo_root/assets/openapi.yaml"

if kill -0 "$server_pid" 2>/dev/null; then :; else
    log "planbox died during the run; its log:"
    cat "$work/server.log" >&2
    server_pid=""
    exit 1
fi

if ((${#failed[@]})); then
    log "FAILED against: ${failed[*]} (seed $seed, $max_examples examples)"
    exit 1
fi
log "passed against the upstream and the planbox specs (seed $seed, $max_examples examples)"
