"""Run one provisioning script under the script contract, and turn whatever it does into an outcome.

The team's scripts are trusted but not well behaved: they hang, print megabytes, leave children
behind, or die from a signal. The engine must survive all of that and still know, after a crash of
its own, which process group it had started. So this module:

- passes spec values only through argv and the environment, never through a shell string;
- starts every script in its own session behind a tiny stdin "start gate", so the caller can record
  the process group durably *before* the script's first line runs, and a caller that dies before
  saying "go" leaves nothing running;
- enforces the timeout on the whole process group (TERM, grace, KILL) and always reaps;
- reads both pipes concurrently with bounded memory, and stops waiting for EOF shortly after the
  script exits, because a background child may hold the pipes open forever;
- never raises for a script failure: it returns a `ScriptOutcome` the engine can store.

Linux-first: group liveness reads /proc so that zombies (which still answer kill(0)) count as gone.
"""

from __future__ import annotations

import difflib
import errno
import fnmatch
import functools
import os
import re
import select
import selectors
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ReconcilerError
from .models import canonical_json
from .terminal import has_control, printable

# The gate is a constant program; the script path arrives as its $0, so nothing is ever interpolated.
# It waits for "go" (so the caller can record the process group first), runs the script as its child
# with /dev/null as stdin (the pipe belongs to the handshake), and ends the way the script ended.
# Started under `setpriv --pdeathsig HUP`, it also gets SIGHUP when the worker thread that started it
# dies (kill -9, OOM) and then kills its whole process group: a script never outlives its worker, so
# a job reclaimed on another machine cannot run beside an orphan. TERM is caught (a no-op) so that a
# timeout's TERM reaches the script with its default action while the gate stays to report.
# Without the guard (one machine: a reclaim ends an orphan itself, see engine) the gate simply execs.
PLAIN_GATE_PROGRAM = 'read -r go && [ "$go" = go ] && exec "$0" "$@" </dev/null'
GATE_PROGRAM = """
trap 'kill -KILL 0' HUP
trap ':' TERM INT
read -r go && [ "$go" = go ] || exit 125
"$0" "$@" </dev/null &
child=$!
while :; do
    wait "$child"; status=$?
    kill -0 "$child" 2>/dev/null || break
done
if [ "$status" -gt 128 ]; then trap - TERM INT; kill -$((status - 128)) $$; fi
exit "$status"
"""
PDEATHSIG = ["setpriv", "--pdeathsig", "HUP"] if shutil.which("setpriv") else []
SCRIPT_NAMES = {"create": "provision.sh", "update": "provision.sh", "delete": "teardown.sh"}
URL_PATTERN = re.compile(r"""https?://[^\s"'<>]+""")
OUTPUT_TAIL_BYTES = 4096
# A background child may keep our pipes open after the script exits; we wait this long, then stop.
DRAIN_AFTER_EXIT = 1.0
POLL_INTERVAL = 0.05
# SIGKILL cannot be ignored, so a group still present this long after it is stuck in the kernel.
KILL_SETTLE = 5.0
# What a script inherits from our environment besides the contract's variables and `pass_env`.
SYSTEM_ENV = ("PATH", "HOME", "USER", "LANG", "LC_*", "TZ", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR",
              "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")
# The controller's own credentials: passed only when `pass_env` names them exactly.
SECRET_PREFIXES = ("RECONCILER_", "PG")
TARGETS_FILE_KEYS = ("pass_env", "targets")  # provision/targets.yaml; `targets` is read by targets.py
ENV_PATTERN = re.compile(r"[A-Za-z0-9_*?\[\]!]+")
# Linux's MAX_ARG_STRLEN: one "NAME=value" string of the environment may not be longer (E2BIG).
ENV_STRING_LIMIT = 128 * 1024


@dataclass(frozen=True, slots=True)
class ScriptOutcome:
    """What one script run did, in the shape the jobs table stores."""

    ok: bool
    exit_code: int | None
    url: str | None
    error: str | None
    permanent: bool
    output_tail: str
    duration: float


def resolve_script(*, provision_dir: Path, runtime_target: str, action: str) -> Path:
    """provision/<target>/<name> when the target overrides it, else the shared provision/<name>."""
    name = SCRIPT_NAMES.get(str(action))
    if name is None:
        raise ValueError(f"no script for action {action!r}; expected one of {sorted(SCRIPT_NAMES)}")
    # The spec validates the target's pattern; rows read back from a database are checked again here
    # because the name becomes a path.
    if not runtime_target or "/" in runtime_target or runtime_target.startswith("."):
        raise ValueError(f"invalid runtime_target {runtime_target!r}")
    override = provision_dir / runtime_target / name
    return override if override.exists() else provision_dir / name


# observe.sh (optional, per target): exit 0 and print the URL when the resource exists, exit 3 when it does not
OBSERVE_NAME = "observe.sh"
OBSERVE_ABSENT = 3


def observe_script(*, provision_dir: Path, runtime_target: str) -> Path | None:
    """provision/<target>/observe.sh when the target offers one (there is no shared one), else None."""
    if not runtime_target or "/" in runtime_target or runtime_target.startswith("."):
        return None
    script = provision_dir / runtime_target / OBSERVE_NAME
    return script if script.exists() else None


def url_problem(text: str) -> str | None:
    """Why `text` is not a URL a script could have reported (the rules of a provision's URL), or None."""
    if has_control(text):
        return "holds control characters"
    if not URL_PATTERN.fullmatch(text):
        return "is not an http(s):// URL (no spaces, quotes or angle brackets)"
    return None


def gate_argv(*, script: Path, guard: bool = True) -> list[str]:
    """The argv that starts `script` only after its parent writes "go" to stdin.

    `guard`: also end the script's whole group if the worker dies (costs a setpriv exec and a fork per
    run; needed where a job may be reclaimed on another machine). Without setpriv there is no guard.
    """
    # Absolute, because the script runs with cwd = its workdir and a bare name would search PATH.
    if guard and PDEATHSIG:
        return [*PDEATHSIG, "/bin/sh", "-c", GATE_PROGRAM, str(script.absolute())]
    return ["/bin/sh", "-c", PLAIN_GATE_PROGRAM, str(script.absolute())]


def script_env(*, spec: dict[str, Any], action: str, workdir: Path, job_id: str,
               pass_env: tuple[str, ...] = ()) -> dict[str, str]:
    """The allowed part of our environment plus the contract's variables; the only way spec values reach a script."""
    env = passed_env(environ=os.environ, pass_env=pass_env)
    env.update({
        "RESOURCE_ID": str(spec.get("resource_id", "")),
        "OWNER": str(spec.get("owner", "")),
        "REGION": str(spec.get("region", "")),
        "RUNTIME_TARGET": str(spec.get("runtime_target", "")),
        "DEPLOY_REF": str(spec.get("deploy_ref", "")),
        "RESOURCE_PARAMS": canonical_json(spec.get("params") or {}),
        # The same serialisation the store hashes, so a script can compare it with what it applied.
        "RESOURCE_JSON": canonical_json(spec),
        "RECONCILER_ACTION": str(action),
        "RECONCILER_WORKDIR": str(workdir),
        "RECONCILER_JOB_ID": job_id,
    })
    return env


# --- the environment a script inherits -----------------------------------------------------------


def passed_env(*, environ: Mapping[str, str], pass_env: tuple[str, ...]) -> dict[str, str]:
    """The variables of `environ` a script may see: the system ones and those `pass_env` lists.

    RECONCILER_* (database URLs, tokens) and PG* (passwords) pass only when listed by their exact name,
    so a broad pattern such as `*` never hands a script the controller's own credentials.
    """
    allowed, exact = _env_matcher(pass_env)
    return {name: value for name, value in environ.items()
            if name in exact or (allowed.match(name) and not name.startswith(SECRET_PREFIXES))}


def dropped_env(*, environ: Mapping[str, str], pass_env: tuple[str, ...]) -> list[str]:
    """Names (never values) of the variables scripts do not get: logged once, so a broken script says why."""
    kept = passed_env(environ=environ, pass_env=pass_env)
    return sorted(name for name in environ if name not in kept)


@functools.lru_cache(maxsize=8)
def _env_matcher(pass_env: tuple[str, ...]) -> tuple[re.Pattern[str], frozenset[str]]:
    patterns = (*SYSTEM_ENV, *pass_env)
    return re.compile("|".join(fnmatch.translate(p) for p in patterns)), frozenset(pass_env)


def read_pass_env(*, provision_dir: Path) -> tuple[str, ...]:
    """`pass_env: [AWS_*, …]` from provision/targets.yaml; () without the file; an error naming file:line."""
    import yaml

    path = Path(provision_dir) / "targets.yaml"
    try:
        text = path.read_text()
    except FileNotFoundError:
        return ()
    except OSError as exc:
        raise ReconcilerError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise ReconcilerError(f"{path}:{line}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    return _pass_env_from(root, path=path)


def _pass_env_from(root: Any, *, path: Path) -> tuple[str, ...]:
    import yaml

    if root is None:
        return ()
    if not isinstance(root, yaml.MappingNode):
        raise ReconcilerError(f"{path}:{root.start_mark.line + 1}: expected a mapping (targets:, pass_env:)")
    found: tuple[str, ...] = ()
    for key, value in root.value:
        if key.value not in TARGETS_FILE_KEYS:
            hint = difflib.get_close_matches(str(key.value), TARGETS_FILE_KEYS, n=1)
            also = f" (did you mean {hint[0]!r}?)" if hint else f"; expected one of {', '.join(TARGETS_FILE_KEYS)}"
            raise ReconcilerError(f"{path}:{key.start_mark.line + 1}: {key.value}: unknown key{also}")
        if key.value == "pass_env":
            found = _names(value, path=path)
    return found


def _names(node: Any, *, path: Path) -> tuple[str, ...]:
    import yaml

    if not isinstance(node, yaml.SequenceNode):
        raise ReconcilerError(f"{path}:{node.start_mark.line + 1}: pass_env: expected a list of variable names"
                              " or patterns, e.g. [AWS_*, SSH_AUTH_SOCK]")
    for item in node.value:
        if not isinstance(item, yaml.ScalarNode) or not ENV_PATTERN.fullmatch(item.value):
            raise ReconcilerError(f"{path}:{item.start_mark.line + 1}: pass_env: expected a variable name"
                                  " or pattern (letters, digits, _ and the globs * ? [ ])")
    return tuple(item.value for item in node.value)


def run_script(
    *,
    script: Path,
    spec: dict[str, Any],
    action: str,
    workdir: Path,
    timeout: float = 900.0,
    grace: float = 5.0,
    needs_url: bool,
    job_id: str = "",
    on_start: Callable[[int], None] | None = None,
    capture_bytes: int = 64 * 1024,
    guard: bool = True,
    pass_env: tuple[str, ...] = (),
) -> ScriptOutcome:
    """Run `script` for one resource; the outcome says what happened, failures included.

    `guard`: the script's group dies with the worker (see gate_argv). `pass_env`: names or patterns of
    our environment the script also gets (see passed_env).
    """
    started = time.monotonic()
    problem = _unrunnable(script)
    if problem:
        return _failure(problem, started=started, permanent=True)
    env: dict[str, str] = {}
    try:
        _prepare_workdir(workdir)
        env = script_env(spec=spec, action=action, workdir=workdir, job_id=job_id, pass_env=pass_env)
        proc = _spawn(script=script, env=env, workdir=workdir, guard=guard)
    except OSError as exc:
        if exc.errno == errno.E2BIG:  # the same spec fails the same way every time: not worth a retry soon
            return _failure(_too_large(script=script, env=env), started=started, permanent=True)
        return _failure(f"could not start {script}: {exc}", started=started)
    except ValueError as exc:  # a spec value with a NUL byte cannot be an env var
        return _failure(f"could not start {script}: {exc}", started=started, permanent=True)
    return _run_started(proc, started=started, timeout=timeout, grace=grace, needs_url=needs_url,
                        on_start=on_start, capture_bytes=capture_bytes)


def _run_started(proc: subprocess.Popen[bytes], *, started: float, timeout: float, grace: float,
                 needs_url: bool, on_start: Callable[[int], None] | None, capture_bytes: int) -> ScriptOutcome:
    streams = _Streams(proc, capture_bytes=capture_bytes)
    try:
        start_error = _open_gate(proc, on_start=on_start)
        if start_error:
            _abandon(proc)
            return _failure(start_error, started=started, tail=streams.tail())
        stopped = _supervise(proc, streams, timeout=timeout, grace=grace)
    except BaseException:
        # Interrupted ourselves (KeyboardInterrupt, a bug): leave no script running behind us.
        _abandon(proc)
        raise
    finally:
        streams.close()
    return _outcome(proc.returncode, stopped=stopped, timeout=timeout, needs_url=needs_url,
                    streams=streams, started=started)


def _too_large(*, script: Path, env: dict[str, str]) -> str:
    """E2BIG names no variable; name the largest ones (sizes only: values may be secrets)."""
    sizes = sorted(((len(k) + len(v) + 2, k) for k, v in env.items()), reverse=True)[:2]
    largest = ", ".join(f"{name} is {size // 1024} KiB" for size, name in sizes)
    return (f"could not start {script}: its environment is too large for the kernel ({largest}; Linux allows "
            f"{ENV_STRING_LIMIT // 1024} KiB per variable): make the spec's params smaller")


def _unrunnable(script: Path) -> str | None:
    if not script.is_file():
        return f"script not found: {script}"
    if not os.access(script, os.X_OK):
        return f"script is not executable: {script} (chmod +x it)"
    return None


def _prepare_workdir(workdir: Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    # mkdir's mode does not apply to a directory that already existed; the state in it is private.
    workdir.chmod(0o700)


def _spawn(*, script: Path, env: dict[str, str], workdir: Path, guard: bool) -> subprocess.Popen[bytes]:
    # start_new_session: the script leads its own session and process group (pgid == pid), so the
    # timeout can kill everything it started, and a terminal's Ctrl-C does not reach it twice.
    return subprocess.Popen(
        gate_argv(script=script, guard=guard), env=env, cwd=workdir, bufsize=0,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _open_gate(proc: subprocess.Popen[bytes], *, on_start: Callable[[int], None] | None) -> str | None:
    """Let the caller record the pgid, then let the script run; returns why it could not start."""
    try:
        if on_start is not None:
            on_start(proc.pid)
    except Exception as exc:  # the caller's failure, reported as this job's failure
        return f"not started: on_start failed: {type(exc).__name__}: {exc}"
    try:
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        proc.stdin.close()
    except OSError as exc:  # the gate died before we spoke (killed from outside)
        return f"not started: start gate closed early: {exc}"
    return None


def _abandon(proc: subprocess.Popen[bytes]) -> None:
    _signal_group(proc.pid, signal.SIGKILL)
    proc.wait()
    if proc.stdin is not None and not proc.stdin.closed:
        proc.stdin.close()


class _Tail:
    """The last `limit` bytes of a stream: a 10 MB log must not become 10 MB of memory."""

    __slots__ = ("data", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        excess = len(self.data) - self.limit
        if excess > 0:
            del self.data[:excess]


class _Streams:
    """Both pipes of one script, read as they fill so the script never blocks on a full pipe."""

    def __init__(self, proc: subprocess.Popen[bytes], *, capture_bytes: int) -> None:
        self.stdout = _Tail(capture_bytes)
        # One interleaved tail, because a user reads stdout and stderr in the order they happened.
        self.combined = _Tail(max(capture_bytes, OUTPUT_TAIL_BYTES))
        self.selector = selectors.DefaultSelector()
        assert proc.stdout is not None and proc.stderr is not None, "the script runs with both pipes"
        self.selector.register(proc.stdout, selectors.EVENT_READ, "stdout")
        self.selector.register(proc.stderr, selectors.EVENT_READ, "stderr")

    @property
    def open(self) -> bool:
        return bool(self.selector.get_map())

    def pump(self, timeout: float) -> None:
        """Read what arrives within `timeout`; a pipe at EOF is closed and forgotten."""
        for key, _ in self.selector.select(max(timeout, 0.0)):
            chunk = os.read(key.fd, 65536)
            if not chunk:
                self._forget(key.fileobj)
                continue
            if key.data == "stdout":
                self.stdout.add(chunk)
            self.combined.add(chunk)

    def drain(self, *, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while self.open and time.monotonic() < deadline:
            self.pump(deadline - time.monotonic())

    def close(self) -> None:
        for key in list(self.selector.get_map().values()):
            self._forget(key.fileobj)
        self.selector.close()

    def _forget(self, pipe: Any) -> None:
        self.selector.unregister(pipe)
        pipe.close()

    def tail(self) -> str:
        return bytes(self.combined.data[-OUTPUT_TAIL_BYTES:]).decode(errors="replace")

    def url(self) -> str | None:
        found = URL_PATTERN.findall(bytes(self.stdout.data).decode(errors="replace"))
        return found[-1] if found else None


def _supervise(proc: subprocess.Popen[bytes], streams: _Streams, *, timeout: float, grace: float) -> str | None:
    """Wait for the script while reading its output; returns "terminated"/"killed" if we stopped it."""
    deadline = time.monotonic() + timeout
    stopped: str | None = None
    exit_fd = _pidfd(proc.pid)
    try:
        while not _exited(proc.pid):
            now = time.monotonic()
            if now >= deadline:
                stopped, deadline = _escalate(proc.pid, stopped=stopped, now=now, grace=grace)
            _wait_a_little(streams, exit_fd=exit_fd, seconds=min(POLL_INTERVAL, deadline - now))
    finally:
        if exit_fd is not None:
            os.close(exit_fd)
    proc.wait()
    # Anything the script left in its group is stopped too. The common case (nothing left) is one
    # kill(0) answered ESRCH; only a group with members costs a /proc scan. A reaped leader's pid could
    # in principle be reused, but a new process cannot lead this group unless pids wrap around first.
    if _group_exists(proc.pid):
        kill_process_group(pgid=proc.pid, grace=max(deadline - time.monotonic(), 0.0) if stopped else grace)
    streams.drain(seconds=DRAIN_AFTER_EXIT)
    return stopped


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _escalate(pgid: int, *, stopped: str | None, now: float, grace: float) -> tuple[str, float]:
    if stopped is None:
        _signal_group(pgid, signal.SIGTERM)
        return "terminated", now + grace
    _signal_group(pgid, signal.SIGKILL)
    return "killed", now + KILL_SETTLE


def _wait_a_little(streams: _Streams, *, exit_fd: int | None, seconds: float) -> None:
    seconds = max(seconds, 0.0)
    if streams.open:
        streams.pump(seconds)
    elif exit_fd is not None:
        select.select([exit_fd], [], [], seconds)  # wakes the moment the script exits
    else:
        time.sleep(seconds)


def _pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when `pid` exits (Linux ≥ 5.3); None means poll instead."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _exited(pid: int) -> bool:
    """Has the script exited? Leaves it a zombie (WNOWAIT) so its pid stays ours until we reap it."""
    info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    return info is not None


def _outcome(returncode: int | None, *, stopped: str | None, timeout: float, needs_url: bool,
             streams: _Streams, started: float) -> ScriptOutcome:
    url = streams.url()
    error = _error_for(returncode, stopped=stopped, timeout=timeout)
    if url is not None and has_control(url):  # an escape sequence would reach every terminal showing it
        refused, url = printable(url), None
        if error is None and needs_url:
            error = f"exit 0 but the URL it printed holds control characters (refused): {refused}"
    if error is None and needs_url and url is None:
        error = "exit 0 but printed no http(s):// URL"
    exit_code = returncode if returncode is not None and returncode >= 0 and not stopped else None
    return ScriptOutcome(ok=error is None, exit_code=exit_code, url=url, error=error, permanent=False,
                         output_tail=streams.tail(), duration=time.monotonic() - started)


def _error_for(returncode: int | None, *, stopped: str | None, timeout: float) -> str | None:
    if stopped:
        return f"timed out after {timeout:g}s ({stopped})"
    if returncode is None:
        return "exit status unknown"
    if returncode < 0:
        return f"killed by signal {_signal_name(-returncode)}"
    return f"exited {returncode}" if returncode else None


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def _failure(error: str, *, started: float, permanent: bool = False, tail: str = "") -> ScriptOutcome:
    return ScriptOutcome(ok=False, exit_code=None, url=None, error=error, permanent=permanent,
                         output_tail=tail, duration=time.monotonic() - started)


# --- process groups: also used to reclaim the job of a worker that died -----------------------------


def process_group_alive(*, pgid: int) -> bool:
    """Does the group still hold a process that runs? Zombies answer kill(0) but run nothing."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's processes: alive, and not ours to judge further
    states = _group_states(pgid)
    return states is None or any(state != "Z" for state in states.values())


def kill_process_group(*, pgid: int, grace: float = 5.0) -> bool:
    """TERM the group, give it `grace` seconds, then KILL it; True if it existed at all."""
    if not process_group_alive(pgid=pgid):
        return False
    _signal_group(pgid, signal.SIGTERM)
    if not _wait_group_gone(pgid, seconds=grace):
        _signal_group(pgid, signal.SIGKILL)
        _wait_group_gone(pgid, seconds=KILL_SETTLE)
    return True


def group_runs_job(*, pgid: int, job_id: str) -> bool:
    """Is this group still running `job_id`? Guards a reclaim against a pgid the kernel has reused."""
    if not job_id:
        return False
    wanted = f"RECONCILER_JOB_ID={job_id}".encode()
    for pid in _group_states(pgid) or {}:
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:  # vanished, or not ours to read
            continue
        if wanted in environ.split(b"\0"):
            return True
    return False


def _signal_group(pgid: int, signum: int) -> bool:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_group_gone(pgid: int, *, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while process_group_alive(pgid=pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_INTERVAL)
    return True


def _group_states(pgid: int) -> dict[int, str] | None:
    """pid → state letter of each process in the group, from /proc; None where there is no /proc.

    Runs after every script, so it reads /proc with bare os calls (pathlib costs 5x more here).
    """
    try:
        names = os.listdir("/proc")
    except OSError:
        return None
    wanted = str(pgid)
    members: dict[int, str] = {}
    for name in names:
        if name.isdigit():
            fields = _read_stat(f"/proc/{name}/stat")
            if fields and len(fields) > 2 and fields[2] == wanted:
                members[int(name)] = fields[0]
    return members


def _read_stat(path: str) -> list[str] | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # the process ended between listing and reading
        return None
    try:
        text = os.read(fd, 4096).decode(errors="replace")
    except OSError:
        return None
    finally:
        os.close(fd)
    return text[text.rfind(")") + 1:].split()


def _stat_fields(path: Path) -> list[str] | None:
    """Fields after the command name; it sits in parentheses and may itself contain ') '."""
    try:
        text = path.read_text(errors="replace")
    except OSError:  # the process ended between listing and reading
        return None
    return text[text.rfind(")") + 1:].split()


def process_alive(*, pid: int) -> bool:
    """True while `pid` exists and is not a zombie (zombies answer kill(0) but run nothing)."""
    fields = _stat_fields(Path(f"/proc/{pid}/stat"))
    if fields is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return not Path("/proc/self").exists()
    return fields[0] != "Z"
