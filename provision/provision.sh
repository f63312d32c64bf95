#!/usr/bin/env bash
# The `local` target: make this resource a real HTTP server on 127.0.0.1 and print its URL.
# Idempotent, as the contract demands: the same DEPLOY_REF reuses the running server, a new one
# replaces it. Spec values arrive only as environment variables and are never evaluated.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=local_lib.sh
source "$here/local_lib.sh"
: "${RESOURCE_ID:?RESOURCE_ID is required}"
: "${DEPLOY_REF:?DEPLOY_REF is required}"

print_url() {
    printf 'http://127.0.0.1:%s/\n' "$(<"$port_file")"
}

start_server() {
    local python pid i
    python="$(command -v python3)" || { echo "python3 not found on PATH" >&2; return 1; }
    rm -f "$port_file" "$pid_file"
    printf '%s' "$DEPLOY_REF" >"$ref_file"
    # Detached (own session, SIGHUP ignored, all three descriptors away from our pipes) so the
    # server outlives this script and the runner does not wait on a pipe it holds.
    local launcher=()
    command -v setsid >/dev/null && launcher=(setsid)
    "${launcher[@]}" nohup "$python" "$here/local_server.py" "$state_dir" </dev/null >>"$log_file" 2>&1 &
    pid=$!
    for ((i = 0; i < 50; i++)); do
        [[ -s "$port_file" ]] && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "local server for $RESOURCE_ID did not start; last lines of $log_file:" >&2
    tail -n 20 "$log_file" >&2 || true
    return 1
}

mkdir -p "$state_dir"
if our_server_pid >/dev/null; then
    if [[ -s "$port_file" && -f "$ref_file" && "$(<"$ref_file")" == "$DEPLOY_REF" ]]; then
        echo "local server for $RESOURCE_ID already runs $DEPLOY_REF"
        print_url
        exit 0
    fi
    echo "replacing local server for $RESOURCE_ID with $DEPLOY_REF"
    stop_server
fi
start_server
echo "started local server for $RESOURCE_ID at $DEPLOY_REF"
print_url
