"""Scoped API tokens (issue 15 point 5): scopes, principals, the tokens file and the front door's decision.

Pure parts only; the daemon with a real tokens file, SIGHUP and real HTTP is tests/e2e/test_api_tokens.py.
"""

from __future__ import annotations

import hashlib

import pytest

from reconciler.errors import SpecError
from reconciler.httpguard import Refused, authenticate
from reconciler.scopes import ADMIN_SCOPES, Principal, Scope, ScopeKind, may, parse_scope, readable_owners
from reconciler.tokens import TokenSet, admin_entry, entry_yaml, new_token, read_tokens_file

TOKEN = "t" * 43


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# --- scopes and principals -------------------------------------------------------------------------


@pytest.mark.parametrize("text, kind, owner", [
    ("read", ScopeKind.READ, None), ("write", ScopeKind.WRITE, None),
    ("read:owner=acme", ScopeKind.READ, "acme"), ("write:owner=team-a.b", ScopeKind.WRITE, "team-a.b"),
])
def test_scopes_parse_once_and_print_as_written(text, kind, owner):
    scope = parse_scope(text)
    assert (scope.kind, scope.owner) == (kind, owner) and str(scope) == text


@pytest.mark.parametrize("text", ["", "reed", "admin", "read:", "read:owner=", "read:team=acme", "write:owner= x",
                                  "Read", "read:owner=a b", "write:owner=a\nb"])
def test_bad_scopes_are_refused_with_the_accepted_forms(text):
    with pytest.raises(ValueError, match="read:owner=<owner>"):
        parse_scope(text)


def test_write_implies_read_and_owner_scopes_stop_at_their_owner():
    team = Principal(name="team-a", scopes=frozenset({Scope(ScopeKind.WRITE, "acme"), Scope(ScopeKind.READ, "beta")}))
    assert may(team, ScopeKind.WRITE, "acme") and may(team, ScopeKind.READ, "acme")
    assert may(team, ScopeKind.READ, "beta") and not may(team, ScopeKind.WRITE, "beta")
    assert not may(team, ScopeKind.READ, "other") and not may(team, ScopeKind.WRITE, "other")
    assert readable_owners(team) == frozenset({"acme", "beta"})
    reader = Principal(name="ro", scopes=frozenset({Scope(ScopeKind.READ)}))
    assert may(reader, ScopeKind.READ, "anyone") and not may(reader, ScopeKind.WRITE, "anyone")
    assert readable_owners(reader) is None  # every owner
    admin = Principal(name="admin", scopes=ADMIN_SCOPES)
    assert may(admin, ScopeKind.WRITE, "x") and readable_owners(admin) is None
    assert may(None, ScopeKind.WRITE, "x") and readable_owners(None) is None  # the door let it in token-less


# --- the tokens file --------------------------------------------------------------------------------


def write(tmp_path, text: str):
    path = tmp_path / "tokens.yaml"
    path.write_text(text)
    return path


def test_a_good_tokens_file_authenticates_by_hash(tmp_path):
    other = "o" * 43
    path = write(tmp_path, f"""# team tokens
- name: ci
  sha256: {sha(TOKEN)}
  scopes: [read]
- name: team-acme
  sha256: "{sha(other).upper()}"
  scopes: [write:owner=acme, read:owner=beta]
""")
    tokens = TokenSet.of(read_tokens_file(path=path))
    assert tokens.principal(TOKEN) == Principal(name="ci", scopes=frozenset({parse_scope("read")}))
    assert tokens.principal(other).name == "team-acme"
    assert tokens.principal("x" * 43) is None and tokens.principal("") is None
    assert len(tokens) == 2


@pytest.mark.parametrize("text, line, field, words", [
    ("- name: ci\n  sha256: {h}\n  scopes: [read]\n  expires: soon\n", 4, "expires", "unknown key"),
    ("- name: ci\n  sha256: abc123\n  scopes: [read]\n", 2, "sha256", "64 hex digits"),
    ("- name: ci\n  sha256: {h}\n  scopes: [reed]\n", 3, "scopes", "'reed' is not a scope"),
    ("- name: ci\n  sha256: {h}\n  scopes: []\n", 3, "scopes", "at least one scope"),
    ("- name: ci\n  sha256: {h}\n", 1, "scopes", "missing"),
    ("- name: ci\n  sha256: {h}\n  scopes: [read]\n- name: ci\n  sha256: {g}\n  scopes: [read]\n", 4, "name",
     "also at line 1"),
    ("- name: ci\n  sha256: {h}\n  scopes: [read]\n- name: cd\n  sha256: {h}\n  scopes: [read]\n", 5, "sha256",
     "same token as 'ci'"),
    ("- name: 'bad name'\n  sha256: {h}\n  scopes: [read]\n", 1, "name", "letters, digits"),
    ("name: ci\n", 1, "", "a list"),
    ("- just-a-string\n", 1, "", "a mapping"),
    ("- name: ci\n  sha256: {h}\n  scopes: [read\n", 4, "", "invalid YAML"),
    ("- name: ci\n  name: cd\n  sha256: {h}\n  scopes: [read]\n", 2, "name", "duplicate key"),
    ("- name: admin\n  sha256: {h}\n  scopes: [read]\n", 1, "name", "--api-token-file"),
])
def test_a_bad_tokens_file_names_file_line_and_field_and_never_the_hash(tmp_path, text, line, field, words):
    path = write(tmp_path, text.format(h=sha(TOKEN), g=sha("g" * 43)))
    with pytest.raises(SpecError) as caught:
        read_tokens_file(path=path, reserved=frozenset({"admin"}))
    problem = caught.value.problems[0]
    assert (problem.file, problem.line, problem.field) == (str(path), line, field), str(caught.value)
    assert words in problem.message, problem.message
    assert sha(TOKEN) not in str(caught.value) and sha(TOKEN).upper() not in str(caught.value)


def test_a_missing_or_empty_tokens_file(tmp_path):
    with pytest.raises(SpecError, match="cannot read"):
        read_tokens_file(path=tmp_path / "nope.yaml")
    assert read_tokens_file(path=write(tmp_path, "# nobody yet\n")) == ()


def test_the_admin_token_is_the_admin_principal_beside_the_file():
    tokens = TokenSet.of([admin_entry(TOKEN)])
    assert tokens.principal(TOKEN) == Principal(name="admin", scopes=ADMIN_SCOPES)
    assert tokens.principal(TOKEN + "x") is None


def test_token_create_output_is_a_file_entry_that_authenticates(tmp_path):
    token = new_token()
    assert len(token) >= 43 and token.isascii()  # 32 random bytes, urlsafe base64
    assert new_token() != token
    path = write(tmp_path, entry_yaml(name="team-acme", scopes=[parse_scope("write:owner=acme")], token=token))
    principal = TokenSet.of(read_tokens_file(path=path)).principal(token)
    assert principal is not None and principal.name == "team-acme"
    assert token not in path.read_text()


# --- the front door's decision ----------------------------------------------------------------------


def decide(method="GET", path="/provisions", header=None, *, tokens=None, open_reads=True):
    return authenticate(method=method, path=path, header=header, tokens=tokens, open_reads=open_reads)


def refused(**kwargs) -> int:
    with pytest.raises(Refused) as caught:
        decide(**kwargs)
    return caught.value.status


def test_the_front_door_decides_who_is_calling():
    tokens = TokenSet.of([admin_entry(TOKEN)])
    bearer = f"Bearer {TOKEN}"
    # loopback: reads go without a token; writes need one once any token is configured
    assert decide(tokens=tokens) is None
    assert decide("POST", tokens=None) is None  # no token configured at all: loopback only, open
    assert refused(method="POST", tokens=tokens) == 401
    assert decide("POST", header=bearer, tokens=tokens).name == "admin"
    assert refused(header="Bearer wrong-token-0123456789", tokens=tokens) == 401  # a wrong token is never ignored
    assert refused(header=f"Basic {TOKEN}", method="POST", tokens=tokens) == 401
    # beyond loopback: every read needs one too, except /health and /metrics
    for path in ("/provisions", "/provisions/x/events", "/provisions/jobs/job-1", "/docs", "/openapi.json"):
        assert refused(path=path, tokens=tokens, open_reads=False) == 401
    assert decide(path="/provisions", header=bearer, tokens=tokens, open_reads=False).name == "admin"
    for path in ("/health", "/metrics"):
        assert decide(path=path, tokens=tokens, open_reads=False) is None
        assert decide(path=path, header="Bearer wrong", tokens=tokens, open_reads=False) is None


@pytest.mark.parametrize("address, loopback", [
    ("127.0.0.1:7878", True), ("127.0.0.2:7878", True), ("[::1]:7878", True), ("localhost:7878", True),
    (":7878", True), ("0.0.0.0:7878", False), ("192.0.2.1:80", False), ("[::]:7878", False),
    ("api.example.com:443", False), ("[::ffff:127.0.0.1]:7878", False),
])
def test_which_addresses_are_loopback(address, loopback):
    """Beyond loopback (anything not 127/8, ::1 or localhost), reads need a token and one must be configured."""
    from reconciler.daemon import DaemonRefused
    from reconciler.daemon.apiserver import bind_api, listen_address, loopback_only

    assert listen_address(address)[2] is loopback and loopback_only(address) is loopback
    if not loopback:
        with pytest.raises(DaemonRefused, match="without --api-token-file or --api-tokens"):
            bind_api(address=address, secured=False)


def front_door(method: str, path: str, headers: dict[str, str], *, open_reads: bool = True) -> tuple[int, object]:
    """One request through FrontDoor in process (plain ASGI messages): (status, the principal the app saw)."""
    import asyncio

    from reconciler.httpguard import FrontDoor

    seen: list[object] = []

    async def app(scope, receive, send):
        seen.append(scope["state"]["principal"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    door = FrontDoor(app, keys=lambda: TokenSet.of([admin_entry(TOKEN)]), open_reads=open_reads)
    scope = {"type": "http", "method": method, "path": path,
             "headers": [(name.encode(), value.encode()) for name, value in headers.items()]}
    asyncio.run(door(scope, receive, send))
    return sent[0]["status"], seen[0] if seen else "not called"


def test_the_front_door_hands_the_principal_to_the_app_and_treats_a_proxied_call_as_remote():
    assert front_door("POST", "/provisions", {"authorization": f"Bearer {TOKEN}"}) == (
        200, Principal(name="admin", scopes=ADMIN_SCOPES))
    assert front_door("GET", "/provisions", {}) == (200, None)  # a token-less loopback read
    assert front_door("POST", "/provisions", {}) == (401, "not called")  # refused before the app (or a body)
    # a reverse proxy on this host connects from loopback; X-Forwarded-For / Forwarded say the client is not
    assert front_door("GET", "/provisions", {"x-forwarded-for": "203.0.113.7"}) == (401, "not called")
    assert front_door("GET", "/provisions/x/events", {"forwarded": "for=203.0.113.7"})[0] == 401
    assert front_door("GET", "/health", {"x-forwarded-for": "203.0.113.7"}) == (200, None)
    assert front_door("GET", "/provisions", {"x-forwarded-for": "203.0.113.7",
                                             "authorization": f"Bearer {TOKEN}"})[0] == 200
