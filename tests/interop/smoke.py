"""Smoke test of the interop peers themselves (not of gatehouse).

Starts tests/interop/idp/server.mjs and tests/interop/agent/app.py the way the Rust harness will
(`--port 0`, read the `READY <url>` line), drives them directly, checks the facts the README states,
and stops them with SIGTERM (expecting exit 0). Needs scripts/setup-interop.sh to have run.

usage: .interop/venv/bin/python tests/interop/smoke.py [-k SUBSTRING] [-v]
Ends with the line `N passed, N failed`; exit 1 when anything failed.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request

import jwt  # PyJWT (with cryptography), pulled in by the mcp package

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IDP = os.path.join(ROOT, "tests", "interop", "idp", "server.mjs")
AGENT = os.path.join(ROOT, "tests", "interop", "agent", "app.py")
VENV_PY = os.path.join(ROOT, ".interop", "venv", "bin", "python")
SESSION = "sess-0123456789abcdef0123456789abcdef-42"  # 40 chars: valid AgentCore session id
VERBOSE = False


# ------------------------------------------------------------------------------------------------
class Peer:
    """A spawned peer: waits for `READY <url>` on stdout, stops with SIGTERM."""

    def __init__(self, argv, name, timeout=30.0):
        self.name = name
        self.stderr_lines = []
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        self.url = self._wait_ready(timeout)
        self.extra_stdout = []
        threading.Thread(target=self._drain_stdout, daemon=True).start()

    def _drain_stderr(self):
        for line in self.proc.stderr:
            self.stderr_lines.append(line.rstrip("\n"))
            if VERBOSE:
                sys.stderr.write(f"  [{self.name}] {line}")

    def _drain_stdout(self):
        for line in self.proc.stdout:
            self.extra_stdout.append(line.rstrip("\n"))

    def _wait_ready(self, timeout):
        result = {}

        def read():
            result["line"] = self.proc.stdout.readline()

        t = threading.Thread(target=read, daemon=True)
        t.start()
        t.join(timeout)
        line = result.get("line", "")
        if not line.startswith("READY "):
            self.kill()
            raise RuntimeError(f"{self.name}: no READY line within {timeout}s (got {line!r}); stderr:\n"
                               + "\n".join(self.stderr_lines[-20:]))
        return line.split(" ", 1)[1].strip()

    def stop(self, timeout=10.0):
        """SIGTERM; returns (exit code, seconds taken)."""
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            rc = None
        return rc, time.monotonic() - t0

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()


def idp(*flags, **kw):
    return Peer(["node", IDP, "--port", "0", *flags], "idp", **kw)


def agent(*flags, **kw):
    return Peer([VENV_PY, AGENT, "--port", "0", *flags], "agent", **kw)


# ------------------------------------------------------------------------------------------------
def http_json(method, url, body=None, headers=None, auth=None, timeout=10):
    headers = dict(headers or {})
    data = None
    if isinstance(body, dict) and headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
        data = urllib.parse.urlencode(body, doseq=True).encode()
    elif body is not None:
        data = json.dumps(body).encode() if not isinstance(body, (bytes, str)) else (
            body.encode() if isinstance(body, str) else body)
        headers.setdefault("Content-Type", "application/json")
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            hdrs = {k.lower(): v for k, v in r.headers.items()}
            if not raw:
                return r.status, hdrs, None
            if hdrs.get("content-type", "").startswith("text/event-stream"):
                return r.status, hdrs, raw.decode()
            try:
                return r.status, hdrs, json.loads(raw)
            except ValueError:
                return r.status, hdrs, raw.decode(errors="replace")
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = raw.decode(errors="replace")
        return e.code, {k.lower(): v for k, v in e.headers.items()}, parsed


def get_token(base, client=("agent-client", "agent-secret"), **params):
    form = {"grant_type": "client_credentials", **params}
    status, _, body = http_json("POST", f"{discovery(base)['token_endpoint']}", form, auth=client,
                                headers={"Content-Type": "application/x-www-form-urlencoded"})
    return status, body


_disco = {}


def discovery(base):
    if base not in _disco:
        status, _, body = http_json("GET", f"{base}/.well-known/openid-configuration")
        assert status == 200, status
        _disco[base] = body
    return _disco[base]


def jwks(base):
    status, headers, body = http_json("GET", discovery(base)["jwks_uri"])
    assert status == 200, (status, body)
    return body


def decode(token):
    return jwt.get_unverified_header(token), jwt.decode(token, options={"verify_signature": False})


def verify(token, keyset, audience="https://agents.example.com", issuer=None):
    header = jwt.get_unverified_header(token)
    jwk = next((k for k in keyset["keys"] if k["kid"] == header["kid"]), None)
    assert jwk is not None, f"kid {header['kid']} not in JWKS {[k['kid'] for k in keyset['keys']]}"
    key = jwt.PyJWK(jwk).key
    return jwt.decode(token, key, algorithms=[header["alg"]], audience=audience, issuer=issuer)


# ------------------------------------------------------------------------------------------------
TESTS = []


def test(fn):
    TESTS.append(fn)
    return fn


@test
def idp_discovery_token_claims():
    with idp("--quiet") as p:
        base = p.url
        assert base.startswith("http://127.0.0.1:"), base
        d = discovery(base)
        assert d["issuer"] == base, d["issuer"]
        assert d["token_endpoint"] == f"{base}/token"
        assert d["jwks_uri"] == f"{base}/jwks"
        assert "client_credentials" in d["grant_types_supported"]
        status, body = get_token(base, scope="invoke")
        assert status == 200, body
        assert body["token_type"] == "Bearer" and body["expires_in"] == 300 and body["scope"] == "invoke", body
        header, claims = decode(body["access_token"])
        assert header["alg"] == "RS256" and header["typ"] == "at+jwt" and header["kid"].startswith("rs256-g1-"), header
        assert set(claims) == {"iss", "aud", "exp", "iat", "jti", "sub", "client_id", "scope"}, claims
        assert claims["iss"] == base and claims["aud"] == "https://agents.example.com"
        assert claims["client_id"] == "agent-client" and claims["sub"] == "agent-client"
        assert claims["scope"] == "invoke" and claims["exp"] - claims["iat"] == 300
        verify(body["access_token"], jwks(base), issuer=base)
        # no scope requested: no scope claim at all
        status, body = get_token(base)
        assert status == 200 and "scope" not in decode(body["access_token"])[1], body
        # both scopes, other client
        status, body = get_token(base, client=("other-client", "other-secret"), scope="invoke read")
        _, claims = decode(body["access_token"])
        assert claims["scope"] == "invoke read" and claims["client_id"] == "other-client", claims
        # unknown scope: silently dropped by oidc-provider (no error)
        status, body = get_token(base, scope="invoke admin")
        assert status == 200 and decode(body["access_token"])[1]["scope"] == "invoke", body
        # wrong secret / unknown resource
        status, body = get_token(base, client=("agent-client", "nope"))
        assert status == 401 and body["error"] == "invalid_client", body
        status, body = get_token(base, resource="https://elsewhere.example.com")
        assert status == 400 and body["error"] == "invalid_target", body
        # explicit resource = the default
        status, body = get_token(base, resource="https://agents.example.com", scope="read")
        assert status == 200 and decode(body["access_token"])[1]["aud"] == "https://agents.example.com"
        ks = jwks(base)
        assert [k["kty"] for k in ks["keys"]] == ["RSA", "EC"], ks
        assert all(set(k) >= {"kid", "alg", "use"} and "d" not in k for k in ks["keys"]), ks


@test
def idp_rotation():
    with idp("--quiet") as p:
        base = p.url
        _, before = get_token(base, scope="invoke")
        old_kid = decode(before["access_token"])[0]["kid"]
        ks1 = jwks(base)
        assert [k["kid"] for k in ks1["keys"]][0] == old_kid

        status, _, state = http_json("POST", f"{base}/__admin/rotate")
        assert status == 200 and state["generation"] == 2, state
        new_kid = state["signingKid"]
        assert new_kid != old_kid and new_kid.startswith("rs256-g2-"), state
        ks2 = jwks(base)
        kids2 = [k["kid"] for k in ks2["keys"]]
        assert kids2[0] == new_kid and old_kid in kids2 and len(kids2) == 4, kids2
        _, after = get_token(base, scope="invoke")
        assert decode(after["access_token"])[0]["kid"] == new_kid
        verify(before["access_token"], ks2, issuer=base)  # old token still verifies
        verify(after["access_token"], ks2, issuer=base)
        assert discovery(base)["issuer"] == http_json("GET", f"{base}/.well-known/openid-configuration")[2]["issuer"]

        status, _, state = http_json("POST", f"{base}/__admin/retire-old")
        assert status == 200 and state["published"] == [new_kid, state["current"]["ES256"]], state
        ks3 = jwks(base)
        assert old_kid not in [k["kid"] for k in ks3["keys"]] and len(ks3["keys"]) == 2
        verify(after["access_token"], ks3, issuer=base)
        try:
            verify(before["access_token"], ks3)
            raise AssertionError("old token verified after retire-old")
        except AssertionError as e:
            assert "not in JWKS" in str(e), e
        # rotate twice more: kids keep changing and stay unique
        k3 = http_json("POST", f"{base}/__admin/rotate")[2]["signingKid"]
        k4 = http_json("POST", f"{base}/__admin/rotate")[2]["signingKid"]
        assert len({new_kid, k3, k4}) == 3 and len(jwks(base)["keys"]) == 6


@test
def idp_es256_and_options():
    claims_json = json.dumps({"agent-client": {"cognito:groups": ["support", "admin"], "tenant": "acme"}})
    with idp("--quiet", "--alg", "ES256", "--ttl", "60", "--audience", "https://a.example,https://b.example",
             "--client", "agent-client:agent-secret:invoke,read",
             "--client", "post-client:post-secret:read:client_secret_post",
             "--client-claims", claims_json, "--issuer-path", "/realms/test") as p:
        base = p.url
        assert base.endswith("/realms/test"), base
        d = discovery(base)
        assert d["issuer"] == base and d["token_endpoint"] == f"{base}/token" and d["jwks_uri"] == f"{base}/jwks", d
        status, body = get_token(base, scope="invoke")
        assert status == 200, body
        header, claims = decode(body["access_token"])
        assert header["alg"] == "ES256" and header["kid"].startswith("es256-"), header
        assert claims["aud"] == "https://a.example" and claims["exp"] - claims["iat"] == 60, claims
        assert claims["cognito:groups"] == ["support", "admin"] and claims["tenant"] == "acme", claims
        verify(body["access_token"], jwks(base), audience="https://a.example", issuer=base)
        status, body = get_token(base, resource="https://b.example")
        assert status == 200 and decode(body["access_token"])[1]["aud"] == "https://b.example"
        # client_secret_post client; a client limited to `read` cannot get `invoke`
        status, _, body = http_json(
            "POST", d["token_endpoint"],
            {"grant_type": "client_credentials", "client_id": "post-client", "client_secret": "post-secret",
             "scope": "read"}, headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert status == 200 and decode(body["access_token"])[1]["client_id"] == "post-client", body
        status, _, body = http_json(
            "POST", d["token_endpoint"],
            {"grant_type": "client_credentials", "client_id": "post-client", "client_secret": "post-secret",
             "scope": "invoke"}, headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert status == 400 and body["error"] == "invalid_scope", body
        # outside the issuer path
        status, _, _ = http_json("GET", base.rsplit("/realms/", 1)[0] + "/.well-known/openid-configuration")
        assert status == 404


@test
def idp_any_resource_faults_stats():
    with idp("--quiet", "--any-resource") as p:
        base = p.url
        status, body = get_token(base, resource="https://wrong.example.com/x")
        assert status == 200 and decode(body["access_token"])[1]["aud"] == "https://wrong.example.com/x"
        http_json("POST", f"{base}/__admin/stats/reset")
        jwks(base)
        jwks(base)
        _, _, stats = http_json("GET", f"{base}/__admin/stats")
        assert stats["jwks"] == 2 and stats["discovery"] == 0, stats
        http_json("POST", f"{base}/__admin/fault", {"jwks": {"status": 503}})
        status, _, body = http_json("GET", f"{base}/jwks")
        assert status == 503 and body["error"] == "injected_fault", (status, body)
        http_json("POST", f"{base}/__admin/fault", {"discovery": {"delayMs": 300}})
        t0 = time.monotonic()
        assert http_json("GET", f"{base}/.well-known/openid-configuration")[0] == 200
        assert time.monotonic() - t0 >= 0.3
        assert http_json("GET", f"{base}/jwks")[0] == 200  # jwks fault replaced
        http_json("POST", f"{base}/__admin/fault", {"jwks": {"body": "{not json"}})
        status, headers, body = http_json("GET", f"{base}/jwks")
        assert status == 200 and body == "{not json", (status, body)
        http_json("POST", f"{base}/__admin/fault", {"jwks": {"body": {"keys": []}, "status": 200}})
        assert http_json("GET", f"{base}/jwks")[2] == {"keys": []}
        http_json("POST", f"{base}/__admin/fault", {"jwks": {"drop": True}})
        try:
            http_json("GET", f"{base}/jwks")
            raise AssertionError("dropped connection answered")
        except (http.client.RemoteDisconnected, ConnectionError, urllib.error.URLError):
            pass
        http_json("POST", f"{base}/__admin/fault", {})
        _, _, stats = http_json("GET", f"{base}/__admin/stats")
        assert stats["jwks"] == 7 and stats["discovery"] == 1, stats
        _, headers, _ = http_json("GET", f"{base}/jwks")
        assert "cache-control" not in headers, headers


@test
def idp_jwks_max_age():
    with idp("--quiet", "--jwks-max-age", "30") as p:
        status, headers, body = http_json("GET", f"{p.url}/jwks")
        assert status == 200 and headers["cache-control"] == "public, max-age=30", headers
        assert headers["content-type"].startswith("application/jwk-set+json"), headers


@test
def idp_sigterm_exit_0():
    p = idp("--quiet")
    base = p.url
    # an idle keep-alive connection must not hold up shutdown
    c = http.client.HTTPConnection(base.split("//")[1])
    c.request("GET", "/jwks")
    c.getresponse().read()
    rc, took = p.stop()
    assert rc == 0 and took < 2.0, (rc, took)
    assert p.extra_stdout == [], p.extra_stdout


def invoke(base, payload, headers=None):
    return http_json("POST", f"{base}/invocations", payload, headers=headers)


@test
def agent_ping_and_invocations():
    with agent() as p:
        base = p.url
        status, headers, body = http_json("GET", f"{base}/ping")
        assert status == 200 and body["status"] == "Healthy" and isinstance(body["time_of_last_update"], int), body
        assert headers["content-type"] == "application/json"

        status, headers, body = invoke(base, {"prompt": "hi"})
        assert status == 200 and headers["content-type"] == "application/json", headers
        assert body["payload"] == {"prompt": "hi"} and body["session_id"] is None
        assert body["request_headers"] is None, body["request_headers"]  # nothing forwardable
        assert len(body["request_id"]) == 36  # uuid4 made up by the SDK
        assert "x-amzn-bedrock-agentcore-runtime-session-id" not in headers  # the SDK does not echo it

        status, _, body = invoke(base, {"prompt": "hi"}, {
            "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id": SESSION,
            "X-Amzn-Bedrock-AgentCore-Runtime-Request-Id": "req-1",
        })
        assert status == 200 and body["session_id"] == SESSION and body["request_id"] == "req-1", body
        assert body["request_headers"] is None  # the session and request-id headers are x-amzn-*: filtered


@test
def agent_header_filtering():
    sent = {
        "Authorization": "Bearer a.b.c",
        "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id": SESSION,
        "X-Amzn-Bedrock-AgentCore-Runtime-Request-Id": "req-2",
        "X-Amzn-Bedrock-AgentCore-Runtime-User-Id": "user-1",
        "X-Amzn-Bedrock-AgentCore-Runtime-Custom-Tenant": "acme",
        "X-Amzn-Trace-Id": "Root=1-5759e988-bd862e3fe1be46a994272793",
        "X-Amz-Date": "20260101T000000Z",
        "X-Amz-Security-Token": "tok",
        "X-Amz-Bedrock-AgentCore-Identity-WAT": "wat-1",
        "WorkloadAccessToken": "legacy-wat",
        "OAuth2CallbackUrl": "https://cb.example.com/cb",
        "X-Forwarded-For": "203.0.113.9",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "agents.example.com",
        "Forwarded": "for=203.0.113.9",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "tracestate": "vendor=1",
        "baggage": "session.id=abc,enduser.id=u1",
        "Mcp-Session-Id": "mcp-1",
        "MCP-Protocol-Version": "2025-11-25",
        "X-Gatehouse-Sub": "agent-client",
        "X-Custom": "y",
        "Cookie": "a=b",
        "Origin": "https://app.example.com",
        "Accept": "application/json",
        "User-Agent": "smoke/1",
        "Cache-Control": "no-cache",
    }
    with agent() as p:
        status, _, body = invoke(p.url, {"q": 1}, sent)
        assert status == 200, body
        got = body["request_headers"]
        expected = {
            "Authorization": "Bearer a.b.c",
            "x-amzn-bedrock-agentcore-runtime-custom-tenant": "acme",
            "x-amz-bedrock-agentcore-identity-wat": "wat-1",
            "workloadaccesstoken": "legacy-wat",
            "oauth2callbackurl": "https://cb.example.com/cb",
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "tracestate": "vendor=1",
            "baggage": "session.id=abc,enduser.id=u1",
            "mcp-session-id": "mcp-1",
            "mcp-protocol-version": "2025-11-25",
            "x-gatehouse-sub": "agent-client",
            "x-custom": "y",
        }
        assert got == expected, json.dumps(got, indent=1)
        assert body["session_id"] == SESSION and body["request_id"] == "req-2"
        assert body["workload_access_token"] == "wat-1"  # the WAT header wins over WorkloadAccessToken
        raw = dict(body["raw_headers"])
        assert raw["x-forwarded-for"] == "203.0.113.9" and raw["x-amzn-bedrock-agentcore-runtime-user-id"] == "user-1"
        # uvicorn's proxy_headers (on by default, trusts 127.0.0.1) applies X-Forwarded-For to the client
        assert body["client"] == "203.0.113.9:0", body["client"]

        # lower-case wire name still lands under the canonical "Authorization" key; duplicates: last wins
        host, port = p.url.split("//")[1].split(":")
        c = http.client.HTTPConnection(host, int(port))
        c.putrequest("POST", "/invocations")
        for k, v in [("authorization", "bearer lower"), ("X-Dup", "1"), ("X-Dup", "2"),
                     ("Content-Type", "application/json"), ("Content-Length", "2")]:
            c.putheader(k, v)
        c.endheaders(b"{}")
        body = json.loads(c.getresponse().read())
        assert body["request_headers"] == {"Authorization": "bearer lower", "x-dup": "2"}, body["request_headers"]
        assert [v for k, v in body["raw_headers"] if k == "x-dup"] == ["1", "2"]
        # same keep-alive connection, no forwardable headers: nothing leaks from the previous request
        c.request("POST", "/invocations", body=b"{}", headers={"Content-Type": "application/json"})
        body = json.loads(c.getresponse().read())
        assert body["request_headers"] is None, body["request_headers"]
        c.close()


@test
def agent_streaming_is_incremental():
    with agent() as p:
        host, port = p.url.split("//")[1].split(":")
        c = http.client.HTTPConnection(host, int(port), timeout=10)
        t0 = time.monotonic()
        c.request("POST", "/invocations", body=json.dumps({"stream": 4, "interval_ms": 250}).encode(),
                  headers={"Content-Type": "application/json", "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id": SESSION})
        r = c.getresponse()
        assert r.status == 200 and r.getheader("content-type").startswith("text/event-stream"), r.getheaders()
        assert r.getheader("transfer-encoding") == "chunked"
        events, times = [], []
        buf = b""
        while True:
            chunk = r.read1(65536)
            if not chunk:
                break
            buf += chunk
            while b"\n\n" in buf:
                frame, buf = buf.split(b"\n\n", 1)
                assert frame.startswith(b"data: "), frame
                events.append(json.loads(frame[6:]))
                times.append(time.monotonic() - t0)
        assert [e.get("index") for e in events[:4]] == [0, 1, 2, 3] and events[4]["done"] is True, events
        assert all(e["session_id"] == SESSION for e in events[:4])
        assert events[4]["echo"]["payload"] == {"stream": 4, "interval_ms": 250}
        assert times[0] < 0.5 and times[3] - times[0] >= 0.6, times  # arrived one by one, not at the end

        status, _, body = invoke(p.url, {"stream": 0})
        # urllib cannot parse SSE as JSON: http_json returns the text
        assert status == 200 and isinstance(body, str) and body.startswith('data: {"done": true'), body


@test
def agent_status_headers_errors():
    with agent() as p:
        status, headers, body = invoke(p.url, {"status": 418, "headers": {"WWW-Authenticate": 'Bearer error="x"'}})
        assert status == 418 and headers["www-authenticate"] == 'Bearer error="x"' and body["payload"]["status"] == 418
        status, _, body = http_json("POST", f"{p.url}/invocations", b"not json",
                                    headers={"Content-Type": "application/json"})
        assert status == 400 and body["error"] == "Invalid JSON", body
        t0 = time.monotonic()
        status, _, _ = invoke(p.url, {"sleep_ms": 400})
        assert status == 200 and time.monotonic() - t0 >= 0.4
        status, _, body = http_json("POST", f"{p.url}/invocations", {"stream": 1, "error": "boom"})
        assert status == 200 and '"error": "boom"' in body and "An error occurred during streaming" in body, body
        assert http_json("GET", f"{p.url}/invocations")[0] == 405
        assert http_json("GET", f"{p.url}/nope")[0] == 404


@test
def agent_sigterm_graceful_exit_0():
    p = agent()
    host, port = p.url.split("//")[1].split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    c.request("POST", "/invocations", body=json.dumps({"stream": 3, "interval_ms": 200}).encode(),
              headers={"Content-Type": "application/json"})
    r = c.getresponse()
    first = r.read1(65536)
    assert first.startswith(b"data: "), first
    result = {}
    stopper = threading.Thread(target=lambda: result.update(zip(("rc", "took"), p.stop())))
    stopper.start()
    rest = r.read()  # the in-flight stream finishes during the graceful shutdown
    stopper.join()
    assert b'"done": true' in first + rest, first + rest
    assert result["rc"] == 0 and result["took"] < 5, result
    assert p.extra_stdout == [], p.extra_stdout


@test
def agent_watch_stdin():
    proc = subprocess.Popen([VENV_PY, AGENT, "--port", "0", "--watch-stdin"], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("READY "), line
        proc.stdin.close()
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    proc = subprocess.Popen(["node", IDP, "--port", "0", "--quiet", "--watch-stdin"], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("READY "), line
        proc.stdin.close()
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@test
def agent_port_in_use_fails_loudly():
    with agent() as p:
        port = p.url.rsplit(":", 1)[1]
        proc = subprocess.run([VENV_PY, AGENT, "--port", port], cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert proc.returncode == 2 and "cannot bind" in proc.stderr and proc.stdout == "", proc


# ------------------------------------------------------------------------------------------------
def main():
    global VERBOSE
    ap = argparse.ArgumentParser()
    ap.add_argument("-k", default="")
    ap.add_argument("-v", action="store_true")
    args = ap.parse_args()
    VERBOSE = args.v
    passed = failed = 0
    for fn in TESTS:
        if args.k not in fn.__name__:
            continue
        t0 = time.monotonic()
        try:
            fn()
            passed += 1
            print(f"ok   {fn.__name__} ({time.monotonic() - t0:.1f}s)", flush=True)
        except Exception:
            failed += 1
            print(f"FAIL {fn.__name__} ({time.monotonic() - t0:.1f}s)", flush=True)
            traceback.print_exc()
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
