# What the packaging test scripts share (sourced, bash): "ok" / "FAIL" lines
# (FAILED=1 after any failure), steps, polling, and ending every process the
# script started (only those, by pid).

FAILED=0
STARTED=()

ok() { printf '    ok    %s\n' "$*"; }
fail() { printf '    FAIL  %s\n' "$*"; FAILED=1; }
step() { printf '\n==> %s\n' "$*"; }

# wait_for WHAT SECONDS CMD...: runs CMD every 0.1 s until it succeeds, at
# most SECONDS; says what it gave up waiting for.
wait_for() {
    local what=$1 limit=$2
    shift 2
    for _ in $(seq $((limit * 10))); do "$@" > /dev/null 2>&1 && return 0; sleep 0.1; done
    echo "    gave up waiting for: $what" >&2
    return 1
}

# started PID: a process stop_started ends.
started() { STARTED+=("$1"); }

# stop_started: SIGTERM to every process recorded by `started`, then waits.
stop_started() {
    local p
    for p in "${STARTED[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${STARTED[@]}"; do wait "$p" 2>/dev/null || true; done
}
