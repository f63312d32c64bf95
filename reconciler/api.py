"""The HTTP control plane served by the daemon: declare, inspect and remove resources, /health, /metrics.

For tooling that cannot commit to git (onboarding pages, support tools). Resources declared here
are stored as desired rows (`source=api`) and reconciled like the files' ones; resources declared
by files belong to the files, and the API refuses to change them (409, naming the file).

Declaring never waits for a script: the change is planned and queued at once, and the answer is
the job to poll. Mutating endpoints require a bearer token when one is configured (always when the
API listens beyond loopback, where reads do too); the token and the body's size are checked in front
of FastAPI (httpguard.py), before any body is read. What the caller behind the token may do is
decided here, per resource owner (scopes.py): a write needs `write` or `write:owner=<owner>`, a read
`read`/`write` or an owner-scoped one; a list shows only the owners the caller may read. Until
desired/ has loaded well once, mutating calls answer 503: which ids the files own is not known yet.
A refused call (4xx) changes nothing.
"""

from __future__ import annotations

import asyncio
from contextlib import AbstractContextManager
from typing import Any, Protocol

from fastapi import FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from .actor import api_actor
from .engine import PlanView, Refusal, converge_one, replace_one
from .errors import ReconcilerError, StoreError
from .httpguard import FrontDoor, Keys
from .models import RESOURCE_ID_PATTERN, Action, Hold, Job, JobStatus, ObservedResource, ResourceSpec, utcnow
from .outofsync import status_message
from .plan import Change, Reason
from .ports import ApiStore
from .scopes import Principal, ScopeKind, may, needed, readable_owners
from .status import event_json, row_json

ResourceId = Path(pattern=RESOURCE_ID_PATTERN, description="The resource's id")


class Plane(Protocol):
    """What the daemon gives the API."""

    open_reads: bool  # reads without a token (loopback only)

    def keys(self) -> Keys | None: ...  # the tokens in force now; None when none is configured
    @property
    def store(self) -> ApiStore: ...

    def desired_pending(self) -> str | None: ...  # why desired/ has not loaded well once yet; None once it has
    def declared(self, resource_id: str) -> tuple[ResourceSpec, str] | None: ...  # its spec and "file" or "api"
    def file_source(self, resource_id: str) -> str | None: ...  # the file:line declaring it, broken files too
    def unknown_target(self, name: str) -> str | None: ...  # why no provision/ script handles it; None if one does
    def health_report(self) -> tuple[dict[str, Any], bool]: ...
    def jobs_queued(self) -> None: ...
    def metrics_text(self) -> tuple[bytes, str]: ...
    def admit(self, view: PlanView) -> Refusal | None: ...  # policy.yaml's verdict on one resource's plan
    def serial(self) -> AbstractContextManager[Any]: ...  # held from the policy check to the write
    def plan_notes(self) -> dict[str, Change] | None: ...  # the last pass's changes and notes by id; None: no plan


class Accepted(BaseModel):
    job_id: str | None
    resource_id: str
    status: str | None = None


class JobView(BaseModel):
    job_id: str
    resource_id: str
    action: str
    status: str
    attempt: int
    claims: int
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    exit_code: int | None
    error: str | None
    url: str | None


class Condition(BaseModel):
    type: str
    status: str
    reason: str
    message: str


class ResourceView(BaseModel):
    resource_id: str
    owner: str
    region: str
    runtime_target: str
    deploy_ref: str
    status: str
    url: str | None
    created_at: str | None
    last_seen: str | None
    health: str
    error: str | None
    attempts: int
    next_attempt_at: str | None
    consecutive_failures: int
    last_check_at: str | None
    protected: bool
    generation: int
    source: str
    conditions: list[Condition]


class EventView(BaseModel):
    at: str
    kind: str
    message: str
    job_id: str | None
    desired_commit: str | None
    details: dict[str, Any] | None = None
    actor: str | None = None  # who caused it (README: actors); null in events older than the column


# Seconds a client is asked to wait while desired/ has not loaded yet (a pass follows every file save).
RETRY_AFTER = 5
# Seconds a client is asked to wait when an owner's hourly change budget is used up (the window slides).
BUDGET_RETRY = 60


def create_app(*, plane: Plane) -> FastAPI:
    app = FastAPI(title="reconciler", version="1.0", description=__doc__)
    app.add_exception_handler(StoreError, _store_unavailable)
    _routes(app, plane)
    app.add_middleware(FrontDoor, keys=plane.keys, open_reads=plane.open_reads)
    return app


async def _store_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """The database is away (locked, restarting): 503 with the reason; nothing was changed."""
    return JSONResponse({"detail": f"the database is unavailable; nothing was changed: {exc}"}, status_code=503,
                        headers={"Retry-After": "5"})


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or wrong bearer token"},
    403: {"description": "The token's scopes do not cover this owner, or policy.yaml refuses it (the rule codes "
                         "and their place in it)"},
    404: {"description": "Unknown resource"},
    409: {"description": "Declared by a file, protected, a job is open, or not created yet (replace)"},
    413: {"description": "Request body over 1 MiB"},
    429: {"description": "The owner's hourly change budget (policy.yaml) is used up; retry after Retry-After"},
    503: {"description": "desired/ has not loaded yet; retry after Retry-After seconds"},
}


def _routes(app: FastAPI, plane: Plane) -> None:
    """The endpoints, in the order they are matched: declare and jobs, reads, removal and history, the plane."""
    _declare_routes(app, plane)
    _read_routes(app, plane)
    _remove_routes(app, plane)
    _rollout_routes(app, plane)
    _plane_routes(app, plane)


def _accepted(plane: Plane, resource_id: str, result: Any) -> Accepted:
    """202 with the job that carries the change; 409 when a rule held it back, 403 when policy.yaml
    forbids it (nothing was written either way)."""
    if result.refused is not None and result.refused.budget:
        raise HTTPException(429, _refused(resource_id, result.refused), headers={"Retry-After": str(BUDGET_RETRY)})
    if result.refused is not None:
        raise HTTPException(403, _refused(resource_id, result.refused))
    if result.held:
        raise HTTPException(409, f"{resource_id}: {result.held}")
    plane.jobs_queued()
    job = result.job
    return Accepted(job_id=job.job_id if job else None, resource_id=resource_id,
                    status=str(job.status) if job else None)


def _declare_routes(app: FastAPI, plane: Plane) -> None:
    store = plane.store

    @app.post("/provisions", status_code=202, response_model=Accepted, responses=ERRORS)
    def declare(spec: ResourceSpec, request: Request) -> Accepted:
        """Declare (or change) a resource; returns at once with the job that carries the change."""
        if spec.suspend is not None:  # not part of the spec: it would be dropped silently
            raise HTTPException(422, "suspend: declare a suspension in the resource's file or with "
                                     "`reconciler suspend`; the API does not store it")
        principal = request_principal(request)
        _authorise(principal, ScopeKind.WRITE, spec.owner)
        current = _current_owner(store, spec.resource_id)
        if current is not None:  # no taking over another owner's resource by declaring it as yours
            _authorise(principal, ScopeKind.WRITE, current)
        _known_target(plane, spec.runtime_target)
        _may_change(plane, spec.resource_id)
        with plane.serial():
            done = converge_one(store=store, resource_id=spec.resource_id, spec=spec, admit=plane.admit,
                                actor=request_actor(request))
        return _accepted(plane, spec.resource_id, done)

    @app.get("/provisions/jobs/{job_id}", response_model=JobView, responses={404: {"description": "Unknown job"}})
    async def job_status(request: Request, job_id: str = Path(max_length=64)) -> JobView:
        """A job's status, attempts and timestamps, and the resource's URL once the job succeeded."""
        job = store.get_job(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id!r}")
        row = store.get_resource(job.resource_id)
        _authorise_read(request, row.owner if row is not None else None)
        return _job_view(job, row)


def _read_routes(app: FastAPI, plane: Plane) -> None:
    store = plane.store

    @app.get("/provisions", response_model=list[ResourceView], responses=ERRORS)
    async def list_resources(request: Request, owner: str | None = Query(None, max_length=200),
                             status: str | None = Query(None, pattern="^[a-z]+$"),
                             health: str | None = Query(None, pattern="^[a-z]+$")) -> list[ResourceView]:
        """Every resource row the caller may read, optionally filtered by owner, status and health."""
        if owner is not None:
            _authorise_read(request, owner)
        owners = readable_owners(request_principal(request)) if owner is None else None
        rows = (store.list_resources(owner=owner, status=status, health=health) if owners is None else
                sorted((row for one in owners for row in store.list_resources(owner=one, status=status,
                                                                               health=health)),
                       key=lambda row: row.resource_id))
        jobs, notes, holds = store.open_jobs(), plane.plan_notes(), store.holds()
        return [_resource_view(row, job=jobs.get(row.resource_id), notes=notes, hold=holds.get(row.resource_id))
                for row in rows]

    @app.get("/provisions/{resource_id}", response_model=ResourceView, responses=ERRORS)
    async def get_resource(request: Request, resource_id: str = ResourceId) -> ResourceView:
        """One resource: the seed's fields, health, conditions and who declares it."""
        holds = store.holds()
        row = _row(store, resource_id, hold=holds.get(resource_id))
        _authorise_read(request, row.owner)
        job = store.open_jobs(resource_ids=[resource_id]).get(resource_id)  # its own job, not every open one
        return _resource_view(row, job=job, notes=plane.plan_notes(),
                              hold=holds.get(resource_id))


def _remove_routes(app: FastAPI, plane: Plane) -> None:
    store = plane.store

    @app.delete("/provisions/{resource_id}", status_code=202, response_model=Accepted, responses=ERRORS)
    def remove(request: Request, resource_id: str = ResourceId) -> Accepted:
        """Remove an API-declared resource: teardown follows the usual finalizer path."""
        current = _current_owner(store, resource_id)
        if current is not None:  # None: nothing to remove, answered below (503, 409 or 404)
            _authorise(request_principal(request), ScopeKind.WRITE, current)
        _may_change(plane, resource_id)
        row = store.get_resource(resource_id)
        if store.api_declaration(resource_id) is None and (row is None or not row.live):
            raise HTTPException(404, f"no resource {resource_id!r}")
        with plane.serial():
            done = converge_one(store=store, resource_id=resource_id, spec=None, admit=plane.admit,
                                actor=request_actor(request))
        return _accepted(plane, resource_id, done)

    @app.post("/provisions/{resource_id}/replace", status_code=202, response_model=Accepted, responses=ERRORS)
    def replace(request: Request, resource_id: str = ResourceId) -> Accepted:
        """Replace a resource (teardown, then provision) although nothing changed; declared by a file or here."""
        _desired_loaded(plane)
        declared = plane.declared(resource_id)
        if declared is None:
            if store.get_resource(resource_id) is None:
                raise HTTPException(404, f"no resource {resource_id!r}")
            raise HTTPException(409, f"{resource_id} is not declared (in desired/ or through the API)")
        spec, source = declared
        principal = request_principal(request)
        for owner in {spec.owner, _current_owner(store, resource_id) or spec.owner}:  # what it is, what it becomes
            _authorise(principal, ScopeKind.WRITE, owner)
        try:
            result = replace_one(store=store, spec=spec, source=source, actor=request_actor(request))
        except StoreError:
            raise
        except ReconcilerError as exc:
            raise HTTPException(409, str(exc).removeprefix("--replace ")) from None
        return _accepted(plane, resource_id, result)

    @app.get("/provisions/{resource_id}/events", response_model=list[EventView], responses=ERRORS)
    async def events(request: Request, resource_id: str = ResourceId,
                     limit: int | None = Query(None, ge=1, le=10_000)) -> list[EventView]:
        """The resource's history, oldest first (the latest `limit` when given)."""
        _authorise_read(request, _row(store, resource_id).owner)
        return [EventView(**event_json(event)) for event in store.events(resource_id, limit=limit)]


ROLLOUT_ERRORS: dict[int | str, dict[str, Any]] = {404: {"description": "Unknown rollout"},
                                                   409: {"description": "The verb does not apply in its state"}}


def _rollout_routes(app: FastAPI, plane: Plane) -> None:
    """Rollouts (issue 17): read them per wave; pause, resume, abort (?revert=true), promote, with the caller as
    the actor of the recorded event."""
    from .errors import ReconcilerError
    from .rolloutctl import control, status_document

    store = plane.store

    @app.get("/rollouts")
    async def rollouts(request: Request, limit: int = Query(10, ge=1, le=1000)) -> list[dict[str, object]]:
        """The newest rollouts, per wave: done, running, failed, baking until … (a rollout spans owners: scope
        read or write)."""
        _authorise_read(request, None)
        return await asyncio.to_thread(status_document, store=store, rollout_id=None, limit=limit)

    @app.get("/rollouts/{rollout_id}", responses=ROLLOUT_ERRORS)
    async def rollout(request: Request, rollout_id: str = Path(max_length=64)) -> dict[str, object]:
        """One rollout, per wave."""
        _authorise_read(request, None)
        if store.get_rollout(rollout_id) is None:
            raise HTTPException(404, f"no rollout {rollout_id!r}")
        return status_document(store=store, rollout_id=rollout_id, limit=1)[0]

    @app.post("/rollouts/{rollout_id}/{verb}", responses=ROLLOUT_ERRORS)
    def steer(request: Request, rollout_id: str = Path(max_length=64),
              verb: str = Path(pattern="^(pause|resume|abort|promote)$"), revert: bool = False) -> dict[str, str]:
        """pause, resume, abort (`?revert=true` puts the current wave back), promote (skip the rest of the bake).
        A rollout spans owners: it needs scope write (every owner)."""
        principal = request_principal(request)
        if principal is not None and not any(scope.kind is ScopeKind.WRITE and scope.owner is None
                                             for scope in principal.scopes):
            raise HTTPException(403, f"token '{principal.name}' may not steer rollouts (needs scope write); "
                                     "nothing was changed")
        if store.get_rollout(rollout_id) is None:
            raise HTTPException(404, f"no rollout {rollout_id!r}")
        try:
            said = control(store=store, rollout_id=rollout_id, verb=verb, revert=revert and verb == "abort",
                           actor=request_actor(request))
        except ReconcilerError as exc:
            raise HTTPException(409, str(exc)) from None
        return {"rollout_id": rollout_id, "result": said}


def _plane_routes(app: FastAPI, plane: Plane) -> None:
    @app.get("/health", responses={503: {"description": "The daemon is not working"}})
    async def health() -> JSONResponse:
        """Fleet stats, the last pass, the desired commit and whether desired/ loads: 200 working, 503 not."""
        report, ok = await asyncio.to_thread(plane.health_report)
        return JSONResponse(report, status_code=200 if ok else 503)

    @app.get("/metrics", response_class=Response)
    async def metrics() -> Response:
        """Prometheus text format."""
        body, content_type = await asyncio.to_thread(plane.metrics_text)
        return Response(body, media_type=content_type)


def _known_target(plane: Plane, name: str) -> None:
    """A runtime_target no provision/ script handles is refused like any invalid field (422)."""
    message = plane.unknown_target(name)
    if message is not None:
        raise HTTPException(422, [{"type": "unknown_target", "loc": ["body", "runtime_target"], "msg": message,
                                   "input": name}])


def _may_change(plane: Plane, resource_id: str) -> None:
    """503 until desired/ has loaded once (ownership unknown), 409 when a file declares the id."""
    _desired_loaded(plane)
    source = plane.file_source(resource_id)
    if source is not None:
        raise HTTPException(409, f"{resource_id} is declared in {source}; change it there (files own it)")


def _desired_loaded(plane: Plane) -> None:
    """503 until desired/ has loaded once: which ids the files declare is not known before."""
    pending = plane.desired_pending()
    if pending is not None:
        raise HTTPException(503, f"desired/ has not loaded yet ({pending}); changes through the API wait for "
                                 "its first good load, so that ids the files declare are known",
                            headers={"Retry-After": str(RETRY_AFTER)})


def request_principal(request: Request) -> Principal | None:
    """Who is calling, as the front door found it (None: let in without a token)."""
    principal: Principal | None = getattr(request.state, "principal", None)
    return principal


def request_actor(request: Request) -> str:
    """The audit actor of a call: `api:<token name>` (`api:admin` for --api-token-file's token), `api:local`
    for a call the front door let in without a token."""
    principal = request_principal(request)
    return api_actor(principal.name if principal is not None else None)


def _authorise(principal: Principal | None, kind: ScopeKind, owner: str) -> None:
    """403 naming the scope needed when the caller's scopes do not cover `owner`; nothing was changed."""
    if principal is not None and not may(principal, kind, owner):
        raise HTTPException(403, f"token '{principal.name}' may not {kind} resources of owner '{owner}' "
                                 f"(needs scope {needed(kind, owner)}); nothing was changed")


def _authorise_read(request: Request, owner: str | None) -> None:
    """A read of one owner's resources; an unknown owner (a job whose row is gone) needs a full reader."""
    principal = request_principal(request)
    if owner is None:
        if readable_owners(principal) is not None:
            raise HTTPException(403, "this needs scope read or write")
        return
    _authorise(principal, ScopeKind.READ, owner)


def _current_owner(store: ApiStore, resource_id: str) -> str | None:
    """The owner a resource has now: its API declaration's, else its live row's; None when it has none."""
    declared = store.api_declaration(resource_id)
    if declared is not None:
        return str(declared.get("owner", ""))
    row = store.get_resource(resource_id)
    return row.owner if row is not None and row.live else None


def _row(store: ApiStore, resource_id: str, hold: Hold | None = None) -> ObservedResource:
    row = store.get_resource(resource_id)
    if row is None:
        held = f" yet: it is held back by policy ({', '.join(hold.rules)}): {hold.message}" if hold else ""
        raise HTTPException(404, f"no resource {resource_id!r}{held}")
    return row


def _refused(resource_id: str, refusal: Refusal) -> dict[str, Any]:
    """The 403's (429's) body: what the policy says, its rule codes and their place in policy.yaml."""
    where = f" (policy: {', '.join(refusal.places)})" if refusal.places else ""
    what = "waits for the change budget" if refusal.budget else "refused by policy"
    return {"message": f"{resource_id}: {what}: {refusal.message}{where}; nothing was changed",
            "rules": list(refusal.rules), "places": list(refusal.places)}


def _job_view(job: Job, row: ObservedResource | None) -> JobView:
    done = job.status is JobStatus.SUCCEEDED and job.action is not Action.DELETE
    return JobView(job_id=job.job_id, resource_id=job.resource_id, action=str(job.action), status=str(job.status),
                   attempt=job.attempt, claims=job.claims, created_at=job.created_at, started_at=job.started_at,
                   finished_at=job.finished_at, exit_code=job.exit_code, error=job.error,
                   url=row.url if done and row is not None else None)


def _resource_view(row: ObservedResource, *, job: Job | None, notes: dict[str, Change] | None,
                   hold: Hold | None = None) -> ResourceView:
    note = notes.get(row.resource_id) if notes is not None else None
    if note is not None and (note.expected_version not in (None, row.version) or note.reason is Reason.IN_FLIGHT):
        note = None  # planned against an older row (the pass after its job plans again); open jobs are read live
    return ResourceView(**row_json(row), conditions=conditions(row, job=job, note=note, planned=notes is not None,
                                                               hold=hold))


def conditions(row: ObservedResource, *, job: Job | None, note: Change | None = None,
               planned: bool = False, hold: Hold | None = None) -> list[Condition]:
    """Kubernetes-style conditions: Ready (False with the reason when not in sync, as `status` says it),
    Healthy, Reconciling, PolicyAllowed (False with the rule codes while policy.yaml holds its change
    back). `note` is the last pass's plan about the row (`planned`: a plan is known)."""
    out = status_message(row, job=job, plan_note=note, now=utcnow(), planned=planned)
    ready = out is None and row.status.value == "active"
    reason = str(out.kind) if out is not None else row.status.value
    message = out.text if out is not None else ""
    healthy = row.health.value
    in_flight = job is not None
    return [
        Condition(type="Ready", status=str(ready), reason=reason, message=message),
        Condition(type="Healthy", status={"healthy": "True", "unhealthy": "False"}.get(healthy, "Unknown"),
                  reason=healthy, message=f"{row.consecutive_failures} failed checks in a row"),
        Condition(type="Reconciling", status=str(in_flight), reason="JobOpen" if in_flight else "Idle",
                  message=""),
        # False while policy.yaml holds its change back: the reason is the rule code, the message why
        Condition(type="PolicyAllowed", status=str(hold is None), reason=",".join(hold.rules) if hold else "Allowed",
                  message=hold.message if hold else ""),
    ]
