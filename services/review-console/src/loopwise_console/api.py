"""The console's REST API and web UI (FastAPI; server-rendered pages with htmx, no build step).

Errors are JSON: `{"error": {"status": 409, "code": "already_claimed", "message": "..."}}`.
Every denial (401, 403, 404 of a task, 413, 429) is written as a `ConsoleAuditV1`.
"""

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, Literal, cast

from fastapi import Depends, FastAPI, Form, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from markupsafe import Markup, escape
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from loopwise.logging import get_logger
from loopwise_console.auth import (
    CAN_ADMIN,
    ROLES,
    AuthError,
    OidcVerifier,
    Principal,
    Role,
    create_token,
    looks_like_jwt,
    token_principal,
)
from loopwise_console.config import ConsoleSettings
from loopwise_console.console import (
    AssignIn,
    BlindLabelsIn,
    Console,
    ConsoleError,
    DecisionIn,
    Filters,
    NoteIn,
    require,
)
from loopwise_console.store import ConsoleStore

log = get_logger(__name__)
HERE = Path(__file__).parent
COOKIE = "lwc_session"
API = "/api/v1"


class QueueQuery(BaseModel):
    """The queue filters, validated (the UI's lenient parsing checks against it)."""

    tenant: str | None = Field(default=None, max_length=128)
    queue: str | None = Field(default=None, max_length=200)
    priority: Literal["p1", "p2", "p3", "p4"] | None = None
    sla: Literal["ok", "due_soon", "overdue"] | None = None
    rule: str | None = Field(default=None, max_length=128)
    kind: Literal["hold", "sample"] | None = None
    state: Literal["open", "second_opinion", "disputed", "decided", "expired", "all"] | None = None
    mine: bool = False


class ErrorBody(BaseModel):
    """What went wrong."""

    status: int
    code: str
    message: str


class ErrorOut(BaseModel):
    """Every error answer."""

    error: ErrorBody


class TokenIn(BaseModel):
    """A new bearer token's owner, role and tenants."""

    model_config = {"extra": "forbid"}
    subject: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@-]+$")
    role: Literal["reviewer", "supervisor", "auditor", "admin"]
    tenants: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")]] = Field(
        min_length=1, max_length=100
    )
    label: str | None = Field(default=None, max_length=200)


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": text}
    for code, text in (
        (401, "No, unknown or invalid credentials"),
        (403, "The caller's role may not do this"),
        (404, "No such task among the caller's tenants"),
        (409, "Already claimed, lease lost, or the task is decided or expired"),
        (413, "Request body too large"),
        (422, "The request does not validate"),
        (429, "Too many requests for this token"),
    )
}


class BodyLimit:
    """ASGI middleware: a body over `limit` bytes is answered 413 before the app reads it."""

    def __init__(self, app: ASGIApp, limit: int, on_reject: Callable[[Scope], None]) -> None:
        self.app = app
        self.limit = limit
        self.on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._reject(scope, send)
            return
        seen = 0

        async def counting() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, counting, send)
        except _TooLarge:
            await self._reject(scope, send)

    async def _reject(self, scope: Scope, send: Send) -> None:
        self.on_reject(scope)
        response = error_response(413, "too_large", f"request body over {self.limit} bytes")
        await response(scope, _drain, send)


class _TooLarge(Exception):
    pass


async def _drain() -> Message:
    return {"type": "http.disconnect"}


class RateLimiter:
    """A token bucket per caller: `per_minute` requests, refilled continuously."""

    def __init__(self, per_minute: int) -> None:
        self.rate = per_minute / 60.0
        self.capacity = float(per_minute)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        """Take one request from the key's bucket; False when it is empty."""
        now = time.monotonic()
        with self._lock:
            level, last = self._buckets.get(key, (self.capacity, now))
            level = min(self.capacity, level + (now - last) * self.rate)
            if level < 1:
                self._buckets[key] = (level, now)
                return False
            self._buckets[key] = (level - 1, now)
            return True


def highlight(text: str, findings: list[dict[str, Any]]) -> Markup:
    """A segment's text with its findings' evidence spans marked (everything else escaped)."""
    spans = sorted(
        (f["evidence"]["start"], f["evidence"]["end"])
        for f in findings
        if f["evidence"].get("start") is not None and f["evidence"].get("end") is not None
    )
    parts: list[str] = []
    pos = 0
    for start, end in spans:
        if start < pos or end > len(text) or end <= start:
            continue
        parts.append(str(escape(text[pos:start])))
        parts.append(f"<mark>{escape(text[start:end])}</mark>")
        pos = end
    parts.append(str(escape(text[pos:])))
    return Markup("".join(parts))  # noqa: S704 - every piece above is escaped


def enc(value: Any) -> dict[str, Any]:
    """A JSON-ready dict (datetimes as RFC 3339)."""
    return cast(dict[str, Any], jsonable_encoder(value))


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The JSON error shape."""
    return JSONResponse(
        {"error": {"status": status, "code": code, "message": message}},
        status_code=status,
        headers=headers,
    )


def create_app(settings: ConsoleSettings, store: ConsoleStore) -> FastAPI:
    """The console's web application on a store."""
    console = Console(store, settings)
    oidc = OidcVerifier(settings.oidc) if settings.oidc.issuer else None
    limiter = RateLimiter(settings.limits.requests_per_minute)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters["highlight"] = highlight
    app = FastAPI(
        title="Loopwise review console",
        version="1.0.0",
        description=(
            "Queue, claim and decide review tasks; every decision becomes a ReviewDecisionV1 on "
            "loopwise.hitl.decisions.v1. Authenticate with `Authorization: Bearer <token>` "
            "(a console token from `loopwise-console create-token`, or an OIDC JWT)."
        ),
        openapi_url=f"{API}/openapi.json",
        docs_url=f"{API}/docs",
        redoc_url=None,
    )
    app.state.console = console

    def route_of(request: Request) -> str:
        route = request.scope.get("route")
        return str(getattr(route, "path", request.url.path))

    def action_of(request: Request) -> str:
        route = request.scope.get("route")
        return str(getattr(route, "name", "request"))

    def audit_denial(request: Request, status: int, reason: str) -> None:
        try:
            console.audit_denial(
                getattr(request.state, "principal", None),
                action_of(request),
                status,
                request.method,
                route_of(request),
                reason,
                task_id=request.path_params.get("task_id"),
            )
        except Exception:  # the answer still goes out; the failure is logged
            log.exception("audit_denial_failed")

    def reject_body(scope: Scope) -> None:
        try:
            console.audit_denial(
                None, "request.too_large", 413, scope["method"], scope["path"], "body too large"
            )
        except Exception:
            log.exception("audit_denial_failed")

    @app.exception_handler(ConsoleError)
    async def _console_error(request: Request, exc: ConsoleError) -> JSONResponse:
        if exc.status in (401, 403, 404, 429):
            await asyncio.to_thread(audit_denial, request, exc.status, exc.message)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        if exc.status == 429:
            headers = {"Retry-After": "1"}
        if exc.status == 401 and not request.url.path.startswith(API):
            return RedirectResponse("/ui/login", status_code=303)  # type: ignore[return-value]
        return error_response(exc.status, exc.code, exc.message, headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed"}
        return error_response(exc.status_code, codes.get(exc.status_code, "error"), str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:10]]
        return error_response(422, "invalid", "; ".join(problems) or "invalid request")

    def authenticate(request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        token = None
        if header.lower().startswith("bearer "):
            token = header[7:].strip()
        elif header:
            raise ConsoleError(401, "unauthenticated", "use Authorization: Bearer <token>")
        else:
            token = request.cookies.get(COOKIE)
        if not token:
            raise ConsoleError(401, "unauthenticated", "no credentials")
        try:
            if looks_like_jwt(token):
                if oidc is None:
                    raise AuthError("OIDC is not configured on this console")
                principal = oidc.verify(token)
            else:
                with store.read() as conn:
                    principal = token_principal(conn, token)
        except AuthError as exc:
            raise ConsoleError(401, "unauthenticated", str(exc)) from None
        request.state.principal = principal
        if not limiter.allow(principal.rate_key):
            raise ConsoleError(429, "rate_limited", "too many requests; slow down")
        return principal

    Caller = Annotated[Principal, Depends(authenticate)]  # noqa: N806
    Limit = Annotated[int, Query(ge=1, le=settings.limits.max_page_size, description="Page size")]  # noqa: N806
    Offset = Annotated[int, Query(ge=0, le=1_000_000, description="Items to skip")]  # noqa: N806

    def filters(
        tenant: str | None = Query(None, max_length=128),
        queue: str | None = Query(None, max_length=200),
        priority: Literal["p1", "p2", "p3", "p4"] | None = None,
        sla: Literal["ok", "due_soon", "overdue"] | None = None,
        rule: str | None = Query(None, max_length=128),
        kind: Literal["hold", "sample"] | None = None,
        state: Literal["open", "second_opinion", "disputed", "decided", "expired", "all"]
        | None = None,
        mine: bool = False,
    ) -> Filters:
        return Filters(tenant, queue, priority, sla, rule, kind, state, mine)

    TaskFilters = Annotated[Filters, Depends(filters)]  # noqa: N806

    # -- API -------------------------------------------------------------------------------

    @app.get(f"{API}/me", name="me", responses=ERRORS, tags=["identity"])
    def me(principal: Caller) -> dict[str, Any]:
        """Who the caller is."""
        return {
            "subject": principal.subject,
            "role": principal.role,
            "tenants": list(principal.tenants),
            "auth": principal.auth,
        }

    @app.get(f"{API}/tasks", name="tasks.list", responses=ERRORS, tags=["queue"])
    def list_tasks(
        principal: Caller, f: TaskFilters, limit: Limit = 50, offset: Offset = 0
    ) -> dict[str, Any]:
        """The queue: most urgent first, filtered, paginated, with counts per priority."""
        rows, total = console.list_tasks(principal, f, limit, offset)
        from loopwise_console.console import task_summary

        return enc(
            {
                "items": [task_summary(r) for r in rows],
                "total": total,
                "limit": limit,
                "offset": offset,
                "counts": console.counts(principal, f.tenant),
            }
        )

    @app.get(f"{API}/queue/counts", name="queue.counts", responses=ERRORS, tags=["queue"])
    def counts(
        principal: Caller, tenant: str | None = Query(None, max_length=128)
    ) -> dict[str, Any]:
        """Open tasks per priority, the oldest's age and how many are overdue."""
        return console.counts(principal, tenant)

    @app.get(f"{API}/tasks/{{task_id}}", name="task.view", responses=ERRORS, tags=["task"])
    def view(principal: Caller, task_id: str) -> dict[str, Any]:
        """The task: transcript, sentiment, findings, why it was held, deadline."""
        return enc(console.get(principal, task_id))

    @app.post(f"{API}/tasks/{{task_id}}/claim", name="task.claim", responses=ERRORS, tags=["task"])
    def claim(principal: Caller, task_id: str) -> dict[str, Any]:
        """Claim the task (a lease of `lease_s` seconds); claiming again extends it."""
        return enc(console.claim(principal, task_id))

    @app.post(
        f"{API}/tasks/{{task_id}}/release", name="task.release", responses=ERRORS, tags=["task"]
    )
    def release(principal: Caller, task_id: str) -> dict[str, Any]:
        """Give a claimed task back to the queue."""
        return enc(console.release(principal, task_id))

    @app.post(
        f"{API}/tasks/{{task_id}}/labels", name="task.blind_labels", responses=ERRORS, tags=["task"]
    )
    def labels(principal: Caller, task_id: str, body: BlindLabelsIn) -> dict[str, Any]:
        """Blind review: give your own sentiment labels; the model's are shown afterwards."""
        return console.give_blind_labels(principal, task_id, body)

    @app.post(
        f"{API}/tasks/{{task_id}}/decision", name="task.decide", responses=ERRORS, tags=["task"]
    )
    def decide(
        principal: Caller, task_id: str, body: DecisionIn, request: Request
    ) -> dict[str, Any]:
        """Approve or reject with corrections, labels and finding verdicts."""
        outcome = console.decide(principal, task_id, body, route_of(request))
        return {
            "task_id": task_id,
            "state": outcome.state,
            "decision_id": outcome.decision_id,
            "agreed": outcome.agreed,
        }

    @app.post(
        f"{API}/tasks/{{task_id}}/rework", name="task.rework", responses=ERRORS, tags=["supervisor"]
    )
    def rework(principal: Caller, task_id: str, body: NoteIn, request: Request) -> dict[str, Any]:
        """Send a task back to the queue for a fresh review (earlier opinions set aside)."""
        return enc(console.rework(principal, task_id, body.note, route_of(request)))

    @app.post(
        f"{API}/tasks/{{task_id}}/assign", name="task.assign", responses=ERRORS, tags=["supervisor"]
    )
    def assign(principal: Caller, task_id: str, body: AssignIn, request: Request) -> dict[str, Any]:
        """Give the task to a reviewer."""
        return enc(console.assign(principal, task_id, body.reviewer_id, route_of(request)))

    @app.get(
        f"{API}/supervisor/overview",
        name="supervisor.overview",
        responses=ERRORS,
        tags=["supervisor"],
    )
    def overview(principal: Caller) -> dict[str, Any]:
        """Overdue tasks, reviewer workload, agreement between reviewers, queue counts."""
        return enc(console.overview(principal))

    @app.get(
        f"{API}/supervisor/alerts",
        name="supervisor.alerts",
        responses={**ERRORS, 200: {"content": {"text/event-stream": {}}}},
        tags=["supervisor"],
        response_class=StreamingResponse,
    )
    async def alerts(
        principal: Caller,
        after: int | None = Query(None, ge=0, description="Last seen alert seq (default: now)"),
        max_s: float = Query(3600.0, gt=0, le=86_400, description="Close the stream after this"),
    ) -> StreamingResponse:
        """Server-sent events: realtime-rule alerts as they are materialised."""
        require(principal, frozenset({"supervisor", "admin", "auditor"}), "watch alerts")
        start = after if after is not None else await asyncio.to_thread(console.latest_alert_seq)

        async def stream() -> AsyncIterator[bytes]:
            last, began, beat = start, time.monotonic(), time.monotonic()
            yield b": connected\n\n"
            while time.monotonic() - began < max_s:
                items = await asyncio.to_thread(console.alerts_since, principal, last)
                for item in items:
                    last = item["seq"]
                    data = json.dumps(jsonable_encoder(item))
                    yield f"id: {last}\nevent: alert\ndata: {data}\n\n".encode()
                if time.monotonic() - beat > 15:
                    beat = time.monotonic()
                    yield b": keep-alive\n\n"
                await asyncio.sleep(0.5)

        return StreamingResponse(stream(), media_type="text/event-stream")

    @app.post(
        f"{API}/tokens", name="tokens.create", responses=ERRORS, tags=["admin"], status_code=201
    )
    def new_token(principal: Caller, body: TokenIn) -> dict[str, Any]:
        """Create a bearer token (admin); it is shown once and stored only as a hash."""
        require(principal, CAN_ADMIN, "create tokens")
        outside = sorted(set(body.tenants) - set(principal.tenants))
        if outside:
            raise ConsoleError(403, "forbidden", f"tenant {outside[0]!r} is not yours")
        role: Role = body.role
        with store.write() as conn:
            token, token_id = create_token(
                conn, subject=body.subject, role=role, tenants=body.tenants, label=body.label
            )
        return {
            "token": token,
            "token_id": token_id,
            "role": role,
            "tenants": sorted(set(body.tenants)),
        }

    # -- UI ---------------------------------------------------------------------------------

    def page(request: Request, name: str, **context: Any) -> HTMLResponse:
        return templates.TemplateResponse(request, name, {"settings": settings, **context})

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/ui/queue", status_code=303)

    @app.get("/ui/login", include_in_schema=False, name="ui.login")
    def login_page(request: Request, error: str | None = None) -> HTMLResponse:
        return page(request, "login.html", error=error)

    @app.post("/ui/login", include_in_schema=False, name="ui.login_submit")
    def login(request: Request, token: Annotated[str, Form(max_length=4096)]) -> Any:
        try:
            if looks_like_jwt(token) and oidc is not None:
                oidc.verify(token)
            else:
                with store.read() as conn:
                    token_principal(conn, token.strip())
        except AuthError as exc:
            audit_denial(request, 401, str(exc))
            return page(request, "login.html", error="That token is not valid.")
        response = RedirectResponse("/ui/queue", status_code=303)
        response.set_cookie(
            COOKIE, token.strip(), httponly=True, samesite="strict", max_age=12 * 3600
        )
        return response

    @app.post("/ui/logout", include_in_schema=False, name="ui.logout")
    def logout() -> RedirectResponse:
        response = RedirectResponse("/ui/login", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    @app.get("/ui/queue", include_in_schema=False, name="ui.queue")
    def queue_page(
        request: Request, principal: Caller, limit: Limit = 50, offset: Offset = 0
    ) -> HTMLResponse:
        # A form sends empty fields: they mean "any" here; the JSON API validates strictly.
        given = {
            k: v for k, v in request.query_params.items() if v and k not in ("limit", "offset")
        }
        try:
            f = Filters(
                **QueueQuery.model_validate({**given, "mine": "mine" in given}).model_dump()
            )
        except ValidationError as exc:
            raise ConsoleError(422, "invalid", f"bad filter: {exc}") from None
        rows, total = console.list_tasks(principal, f, limit, offset)
        from loopwise_console.console import task_summary

        name = "queue_rows.html" if request.headers.get("hx-request") else "queue.html"
        return page(
            request,
            name,
            principal=principal,
            items=[task_summary(r) for r in rows],
            total=total,
            limit=limit,
            offset=offset,
            f=f,
            counts=console.counts(principal, f.tenant),
        )

    @app.get("/ui/tasks/{task_id}", include_in_schema=False, name="ui.task")
    def task_page(request: Request, principal: Caller, task_id: str) -> HTMLResponse:
        task = console.get(principal, task_id)
        return page(request, "task.html", principal=principal, task=task, roles=ROLES)

    @app.get("/ui/supervisor", include_in_schema=False, name="ui.supervisor")
    def supervisor_page(request: Request, principal: Caller) -> HTMLResponse:
        data = console.overview(principal)
        return page(request, "supervisor.html", principal=principal, data=data)

    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.add_middleware(BodyLimit, limit=settings.limits.max_body_bytes, on_reject=reject_body)
    return app


def openapi_document(settings: ConsoleSettings, store: ConsoleStore) -> dict[str, Any]:
    """The OpenAPI document as served (for the checked-in copy)."""
    return create_app(settings, store).openapi()


Endpoint = Callable[..., Awaitable[Any]]
