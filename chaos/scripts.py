"""The world's provisioning scripts: they record every start and end, detect overlapping runs of one
resource with a non-blocking flock, and misbehave on demand.

A misbehaviour is a one-shot order: the harness writes `control/next-<id>` holding a mode and the
next run of that resource takes it (an atomic `mv`, so exactly one run does). Modes: `fail` (exit 3),
`hang` (past the timeout), `slowterm` (hang, and take 9 s to exit on TERM: less than the runner's 10 s grace), `junk` (binary noise and
URL-like garbage before the real URL). Paths are written into the scripts, not passed through the
environment, because scripts may get a clean environment.
"""

from __future__ import annotations

from pathlib import Path

RECORD_FORMAT = "start|end|OVERLAP time resource action deploy_ref region job pid worker mode exit url"

_SCRIPT = r"""#!/bin/bash
set -u
C=__CONTROL__
log="$C/runs.log"
now() { date +%s.%N; }
job="${RECONCILER_JOB_ID:--}"
read -r parent_comm < /proc/$PPID/comm 2>/dev/null || parent_comm=?
if [ "$parent_comm" = sh ]; then worker=$(cut -d' ' -f4 /proc/$PPID/stat 2>/dev/null || echo 0); else worker=$PPID; fi
exec 9>>"$C/lock-$RESOURCE_ID"
if ! flock -n 9; then
    echo "OVERLAP $(now) $RESOURCE_ID $RECONCILER_ACTION $DEPLOY_REF $REGION $job $$ $worker - 99 -" >> "$log"
    exit 99
fi
mode=ok
if mv "$C/next-$RESOURCE_ID" "$C/taken.$$" 2>/dev/null; then mode=$(cat "$C/taken.$$"); rm -f "$C/taken.$$"; fi
echo "start $(now) $RESOURCE_ID $RECONCILER_ACTION $DEPLOY_REF $REGION $job $$ $worker $mode - -" >> "$log"
pause=$(printf '%s' "${RESOURCE_PARAMS:-}" | sed -n 's/.*"sleep":\([0-9.]*\).*/\1/p')
case "$mode" in
    fail)
        sleep "${pause:-0}"; echo "deliberate failure of $RESOURCE_ID" >&2
        echo "end $(now) $RESOURCE_ID $RECONCILER_ACTION $DEPLOY_REF $REGION $job $$ $worker $mode 3 -" >> "$log"
        exit 3 ;;
    hang)
        sleep 3600 & wait ;;
    slowterm)
        trap 'sleep 9; echo "end $(now) $RESOURCE_ID $RECONCILER_ACTION $DEPLOY_REF $REGION $job $$ $worker $mode 143 -" >> "$log"; exit 143' TERM
        sleep 3600 & wait ;;
    junk)
        head -c 3000 /dev/urandom | tr -d '\000'; printf '\nhttp//not-a-url \033[31m ready?\n' ;;
esac
sleep "${pause:-0}"
__RESULT__
"""
_PROVISION_RESULT = r"""url="http://127.0.0.1:9/$RESOURCE_ID/$DEPLOY_REF/$$"
echo "end $(now) $RESOURCE_ID $RECONCILER_ACTION $DEPLOY_REF $REGION $job $$ $worker $mode 0 $url" >> "$log"
echo "ready at $url"
"""
_TEARDOWN_RESULT = r"""echo "end $(now) $RESOURCE_ID $RECONCILER_ACTION $DEPLOY_REF $REGION $job $$ $worker $mode 0 -" >> "$log"
echo "gone"
"""


def write_scripts(*, provision: Path, control: Path) -> None:
    provision.mkdir(parents=True, exist_ok=True)
    for name, result in (("provision.sh", _PROVISION_RESULT), ("teardown.sh", _TEARDOWN_RESULT)):
        path = provision / name
        path.write_text(_SCRIPT.replace("__CONTROL__", _quoted(control)).replace("__RESULT__", result))
        path.chmod(0o755)


def _quoted(path: Path) -> str:
    return "'" + str(path).replace("'", "'\\''") + "'"
