"""The layering of docs/ARCHITECTURE.md, read from the source: lower layers never import higher ones.

A module that is not in the table fails the test, so every new module is placed in a layer on purpose;
the layering table in docs/ARCHITECTURE.md is generated from this one and checked against it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support import ROOT

PACKAGE = ROOT / "reconciler"

# module (top-level name; store.* counts as "store") → the reconciler modules it may import
ALLOWED: dict[str, set[str]] = {
    "__init__": set(),  # the package marker: only __version__
    "models": set(),
    "errors": set(),
    # test-only switches that bring back past defects for the chaos campaign's self-test (issue 13)
    "defects": set(),
    "yamlfast": set(),
    # settle: when a desired file's content may count (stat/clock only); watch: inotify for the daemon
    "settle": {"defects"},
    "watch": {"settle"},
    "spec": {"models", "errors", "yamlfast", "settle", "yamlcompat"},
    # the runtime targets provision/ provides (floor 2: reads provision/targets.yaml)
    "targets": {"models", "errors", "yamlfast", "settle"},
    # which file owns which id, also while files fail to load (issue 11: the API's ownership check)
    "owners": {"spec"},
    "yamlcompat": set(),
    "plan": {"models", "suspensions"},
    "render": {"plan", "models", "terminal", "policy", "rollout"},
    "retry": set(),
    # why a row is out of sync, in one line (issue 16): the MESSAGE of `status`, the API's Ready condition
    "outofsync": {"models", "plan"},
    "status": {"ports", "models", "errors", "outofsync"},
    # how commands show their data (text or JSON), picked once per command; never sees a store
    "views": {"models", "plan", "render", "status", "terminal", "policy", "outofsync", "rollout"},
    "store": {"models", "errors", "store", "ports", "defects", "suspensions", "rollout"},  # ports: only to prove (for mypy) the store fits them
    # the store as each consumer sees it (issue 14): Protocols over the row types, no SQL
    "ports": {"models", "health", "suspensions", "rollout"},
    "runner": {"models", "errors", "terminal"},
    "health": set(),
    "logs": set(),
    # escaping of control characters for text views (issue 11): pure, imports nothing
    "terminal": set(),
    # the rollouts' effects (issue 17): create from a plan, advance open rollouts (daemon and apply call it)
    "rollouts": {"engine", "models", "plan", "ports", "rollout", "health", "defects", "suspensions"},
    "engine": {"ports", "models", "errors", "spec", "plan", "owners", "settle", "targets", "policy", "actor",
               "suspensions", "rollout"},
    # governance (issue 15): policy.yaml read (model, load) and evaluated (pure) against desired + plan
    "policy": {"policy", "models", "errors", "plan", "yamlfast", "settle", "rollout", "policyfile"},
    # rollouts (issue 17), the pure part: the policy, wave assignment, the plan's holds, the state machine
    "rollout": {"rollout", "models", "plan"},
    # where policy.yaml is, without loading it: a plan with no policy imports no policy code (benchmark P1)
    "policyfile": set(),
    # who caused a change (issue 15's audit): the actor strings, the git actor of desired/, attribution
    "actor": {"liveness", "plan"},
    # `reconciler audit`: the fleet's events, and retention (archive first, then prune)
    "audit": {"errors", "models", "ports", "store"},
    # the other half of the engine: claiming and running jobs (split when engine.py outgrew one job)
    "workers": {"ports", "models", "retry", "runner", "supervise", "logs", "liveness", "health"},
    # HOST and the one owner_is_dead(host, pid) every lock and lease asks (issue 14)
    "liveness": {"runner"},
    # one failure policy for every long-lived loop (store outages retried, anything else is a crash)
    "supervise": {"errors", "retry"},
    "systemd": set(),
    "metrics": set(),
    # issue 15: the daemon's policy.yaml — the last good load and why the latest failed (settle as desired/)
    "policysource": {"errors", "settle"},
    # issue 15: the policy at work in the daemon (holds, budgets' window, metrics) and at the API's door
    "govern": {"defects", "engine", "models", "policy", "policysource", "ports", "spec"},
    "portable": {"ports", "errors", "models", "store"},
    # the daemon package (issue 14: a composition root and its runnables) hosts the API server and its
    # metrics, so it is the one layer above api; its modules import one another
    "daemon": {"ports", "daemon", "engine", "workers", "store", "models", "errors", "logs", "plan", "retry", "runner",
               "systemd", "metrics", "api", "supervise", "settle", "watch", "targets", "liveness", "drift",
               "tokens", "govern", "policy", "policysource", "actor", "rollout", "rollouts"},
    # drift: health-check passes and the drift loop (`check`, the daemon, later a rollout's wave)
    "drift": {"ports", "health", "models", "supervise"},
    # apply: the conversation of `apply`/`destroy` (prompt, progress, summary); a cli-level helper
    "apply": {"engine", "workers", "store", "models", "spec", "runner", "terminal", "options", "views", "targets",
              "actor", "policy", "policyrun", "rollouts", "rolloutrun"},
    # rollouts in the foreground (issue 17): apply following its waves
    "rolloutrun": {"coordination", "models", "ports", "rollout", "rollouts"},
    # reading and steering rollouts (issue 17): `rollout status` and the verbs, for the CLI and the API
    "rolloutctl": {"errors", "models", "ports", "rollout"},
    # issue 16: reading and checking an adoption file (pure but for the runner's URL rule)
    "adoption": {"models", "runner", "terminal"},
    # issue 16: the forget and adopt commands (checked first, then one transaction, actor and reason)
    "lifecycle": {"adoption", "engine", "errors", "models", "options", "ports", "spec", "store", "terminal",
                  "drift"},
    # the command line's option groups as frozen objects (plan, run, check, API, daemon loop, leases)
    "options": {"plan", "retry", "policy"},
    # the policy as the one-shot commands use it (validate, plan, apply, destroy, `policy check`)
    "policyrun": {"actor", "engine", "models", "options", "plan", "policy", "ports", "spec", "targets"},
    "api": {"ports", "engine", "models", "errors", "status", "httpguard", "scopes", "actor", "outofsync", "plan", "rolloutctl"},
    # what `status` knows of the fleet (issue 16): the rows, a read-only plan, each row's verdict
    "survey": {"engine", "errors", "models", "outofsync", "plan", "ports", "spec", "status"},
    # the API's front door (token, body cap, JSON edges) as ASGI middleware: only the principal it finds
    "httpguard": {"scopes"},
    # who calls the API and what they may do (issue 15): scopes, the principal, the permission rule; pure
    "scopes": set(),
    # the API's tokens: the tokens file, the admin token, new tokens, the daemon's keyring (issue 15)
    "tokens": {"errors", "scopes", "settle"},
    # coordination: whether a daemon holds the database (destroy, import --replace ask before acting)
    "coordination": {"ports", "daemon", "models", "errors", "liveness"},
    # suspensions (issue 16): who left which resource (or the fleet) alone, until when; pure
    "suspensions": {"models"},
    # the operator's controls as commands: suspend, resume, reconcile (issue 16)
    "operations": {"ports", "models", "errors", "suspensions"},
    "cli": None,  # type: ignore[dict-item]  # anything
}


def module_name(path: Path) -> str:
    """`reconciler/store/sqlite.py` → "store.sqlite"; a package's `__init__.py` → the package ("store")."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def layer(name: str) -> str:
    return name.split(".")[0]


def _exists(dotted: str) -> bool:
    path = PACKAGE.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def reconciler_imports(name: str, source: str) -> set[str]:
    """Every reconciler module `source` imports (absolute or relative, at any depth), as "x" or "x.y"."""
    is_package = name == "__init__" or (PACKAGE.joinpath(*name.split(".")) / "__init__.py").is_file()
    here = [] if name == "__init__" else name.split(".")
    package = here if is_package else here[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                if node.level - 1 > len(package):
                    raise AssertionError(f"{name}: relative import beyond the package")
                prefix = ["reconciler", *base]
            else:
                prefix = []
            module = ".".join(filter(None, [".".join(prefix), node.module or ""]))
            # `from . import status` imports a module; `from .x import y` imports from module x
            targets = [f"{module}.{alias.name}" if _exists(f"{module}.{alias.name}".removeprefix("reconciler."))
                       else module for alias in node.names]
        else:
            continue
        for target in targets:
            if target == "reconciler" or target.startswith("reconciler."):
                inner = target.removeprefix("reconciler").lstrip(".")
                if inner:
                    found.add(inner)
    return found


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def violations(name: str, imported: set[str]) -> list[str]:
    key = "__init__" if name == "__init__" else layer(name)
    if key not in ALLOWED:
        return [f"{name}: not in the layering table (add it to ALLOWED and to docs/ARCHITECTURE.md)"]
    allowed = ALLOWED[key]
    if allowed is None:
        return []
    return [f"{name} imports {target}" for target in sorted(imported) if layer(target) not in allowed]


@pytest.mark.parametrize("path", modules(), ids=lambda p: module_name(p))
def test_module_respects_the_layering(path: Path) -> None:
    name = module_name(path)
    assert violations(name, reconciler_imports(name, path.read_text())) == []


def test_the_checker_sees_every_kind_of_import() -> None:
    source = (
        "from .models import ResourceSpec\n"
        "import reconciler.errors\n"
        "def later():\n"
        "    from .store import open_store\n"
        "    from . import render\n"
        "    from reconciler.engine import make_plan\n"
    )
    imported = reconciler_imports("plan", source)
    assert imported == {"models", "errors", "store", "render", "engine"}
    assert violations("plan", imported) == ["plan imports engine", "plan imports errors", "plan imports render",
                                            "plan imports store"]
    assert reconciler_imports("store.sqlite", "from ..errors import E\nfrom .migrations import m\n") == {
        "errors", "store.migrations"}
    assert violations("store.sqlite", {"errors", "store.migrations"}) == []
    assert violations("webhook", set()) == ["webhook: not in the layering table (add it to ALLOWED and to docs/ARCHITECTURE.md)"]
    assert violations("cli", {"engine", "store.sqlite"}) == []


def test_the_scan_finds_the_modules() -> None:
    names = {module_name(p) for p in modules()}
    assert {"models", "spec", "plan", "store", "store.sqlite", "cli"} <= names


def test_the_table_allows_only_imports_that_are_made() -> None:
    """The table is the real graph: an edge no module uses is stale, and would let one in unreviewed."""
    used: dict[str, set[str]] = {}
    for path in modules():
        name = module_name(path)
        key = "__init__" if name == "__init__" else layer(name)
        used.setdefault(key, set()).update(layer(target) for target in reconciler_imports(name, path.read_text()))
    stale = {key: sorted(allowed - used.get(key, set()) - {key}) for key, allowed in ALLOWED.items() if allowed}
    assert {key: edges for key, edges in stale.items() if edges} == {}


@pytest.mark.parametrize("path", modules(), ids=lambda p: module_name(p))
def test_module_has_a_docstring(path: Path) -> None:
    assert (ast.get_docstring(ast.parse(path.read_text())) or "").strip(), module_name(path)


# --- the table in docs/ARCHITECTURE.md is this table ---------------------------------------------------

ARCHITECTURE = ROOT / "docs" / "ARCHITECTURE.md"
TABLE_START = "<!-- layering table: generated from ALLOWED in tests/unit/test_layering.py -->"
TABLE_END = "<!-- end of layering table -->"


def floors() -> dict[str, int]:
    """Each module's floor: 1 for a module that imports none of ours, else one above the highest it may import."""
    found: dict[str, int] = {}

    def floor(name: str, path: tuple[str, ...] = ()) -> int:
        if name in path:
            raise AssertionError(f"the layering table has a cycle: {' -> '.join((*path, name))}")
        if name not in found:
            allowed = ALLOWED[name]
            below = [floor(other, (*path, name)) for other in (ALLOWED if allowed is None else allowed)
                     if other != name and other != "__init__"]
            found[name] = 1 + max(below, default=0)
        return found[name]

    for name in ALLOWED:
        floor(name)
    return found


def layering_table() -> str:
    """ALLOWED as the Markdown table of docs/ARCHITECTURE.md (print it with `python -m tests.unit.test_layering`)."""
    rows = ["| floor | module | may import |", "|---|---|---|"]
    for name, floor in sorted(floors().items(), key=lambda item: (item[1], item[0])):
        allowed = ALLOWED[name]
        shown = "anything" if allowed is None else ", ".join(f"`{m}`" for m in sorted(allowed - {name})) or "—"
        label = "`__init__` (the package marker)" if name == "__init__" else f"`{name}`"
        rows.append(f"| {floor} | {label} | {shown} |")
    return "\n".join(rows)


def test_the_architecture_document_shows_this_table() -> None:
    text = ARCHITECTURE.read_text()
    assert TABLE_START in text and TABLE_END in text, f"{ARCHITECTURE}: the layering table's markers are missing"
    shown = text.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0].strip()
    assert shown == layering_table(), (
        "docs/ARCHITECTURE.md's layering table differs from ALLOWED: paste the output of "
        "`python -m tests.unit.test_layering` between its markers")


if __name__ == "__main__":
    print(layering_table())
