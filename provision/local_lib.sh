# Shared by the local target's provision.sh and teardown.sh (sourced, not executed).
# Why a command-line check and not just "kill $(cat pid)": a pid file outlives its process and the
# kernel reuses pids, so we only ever signal a process that is provably this resource's server.

state_dir="${RECONCILER_WORKDIR:?RECONCILER_WORKDIR is required}"
pid_file="$state_dir/server.pid"
port_file="$state_dir/server.port"
ref_file="$state_dir/deploy_ref"
log_file="$state_dir/server.log"

# Prints the pid when the server recorded in pid_file runs and is ours; fails otherwise.
our_server_pid() {
    local pid cmdline args=()
    [[ -s "$pid_file" ]] || return 1
    pid="$(<"$pid_file")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    if [[ -d /proc/self ]]; then
        # A zombie's cmdline is empty, so a killed-but-unreaped server does not count as running.
        mapfile -d '' args <"/proc/$pid/cmdline" 2>/dev/null || return 1
        ((${#args[@]} >= 2)) || return 1
        # Ours = the local server, started for this very state directory: its last two arguments,
        # compared whole (…/work/a is a prefix of …/work/ab, whose server a reused pid may be).
        [[ "${args[-2]}" == */local_server.py && "${args[-1]}" == "$state_dir" ]] || return 1
    else
        cmdline="$(ps -p "$pid" -o command= 2>/dev/null)" || return 1
        [[ "$cmdline" == *"/local_server.py $state_dir" ]] || return 1
    fi
    printf '%s\n' "$pid"
}

# TERM, wait up to ~5 s, then KILL; succeeds when no server of ours is left.
stop_server() {
    local pid i
    pid="$(our_server_pid)" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        our_server_pid >/dev/null || return 0
        sleep 0.1
    done
    echo "local server $pid ignored SIGTERM; sending SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 20; i++)); do
        our_server_pid >/dev/null || return 0
        sleep 0.1
    done
    echo "local server $pid survived SIGKILL" >&2
    return 1
}
