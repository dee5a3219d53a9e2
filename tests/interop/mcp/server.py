"""An MCP server built with the official Python SDK, served over Streamable HTTP at /mcp with
stateful sessions, SSE responses and an in-memory event store (so streams can be resumed with
Last-Event-ID). With `mcp` 2.x it is an `MCPServer`; with 1.x (the `.interop/venv-mcp1` venv)
the same tools on the `FastMCP` class most deployed servers use.

Follows the interop READY protocol (tests/interop/README.md): `--port 0` binds a free port on
127.0.0.1 and prints `READY http://127.0.0.1:<port>` once it answers; SIGTERM exits 0;
`--watch-stdin` exits on stdin EOF. `--name` is returned by the `whoami` tool (to tell replicas
apart). `--expect-audience URL` makes it a resource server that accepts only tokens issued for
itself (MCP authorization: "MUST reject tokens whose audience is not itself"): a request whose
bearer token's `aud` does not contain URL gets 401 before the SDK sees it, and the refusals are
counted (`GET /__refused` -> {"refused": n}, served without a token). It reads `aud` without
verifying the signature: the test that runs it verifies the token `whoami` reports. The SDK's DNS-rebinding protection stays on, as it is by default for a server bound to
127.0.0.1: a request whose Host is not 127.0.0.1:* gets 421, one with a foreign Origin 403.

Tools:
- `whoami()` -> {"server": name, "authorization", "host", "origin", "session"}: the headers the
  request that called it carried.
- `progress(steps, interval_ms)` sends `steps` progress notifications `interval_ms` apart and
  returns the wall-clock time (ms) at which each was sent.
- `billing_refund(amount)` and `admin_wipe()`: tools for the edge's per-tool policy tests
  (SPEC §11); they only report that they ran.
"""

import argparse
import asyncio
import base64
import itertools
import json
import os
import signal
import socket
import sys
import threading
import time

import uvicorn
from mcp.server.streamable_http import EventMessage, EventStore

try:
    from mcp.server.mcpserver import Context, MCPServer

    V2 = True
except ImportError:  # mcp 1.x
    from mcp.server.fastmcp import Context, FastMCP

    V2 = False


class MemoryEventStore(EventStore):
    def __init__(self):
        self.events = []  # (stream_id, event_id, message)
        self.ids = itertools.count(1)

    async def store_event(self, stream_id, message):
        event_id = str(next(self.ids))
        self.events.append((stream_id, event_id, message))
        return event_id

    async def replay_events_after(self, last_event_id, send_callback):
        stream = None
        found = False
        for stream_id, event_id, message in self.events:
            if event_id == last_event_id:
                stream, found = stream_id, True
                continue
            if found and stream_id == stream and message is not None:
                await send_callback(EventMessage(message, event_id))
        return stream


def token_audiences(authorization):
    """The `aud` of a `Bearer <JWT>` header, as a list (empty when there is none)."""
    if not authorization or not authorization.lower().startswith("bearer "):
        return []
    parts = authorization[7:].strip().split(".")
    if len(parts) != 3:
        return []
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return []
    aud = payload.get("aud") if isinstance(payload, dict) else None
    return aud if isinstance(aud, list) else [aud] if isinstance(aud, str) else []


def audience_guard(app, audience, refusals):
    """ASGI middleware: 401 for HTTP requests whose token is not for `audience`."""

    async def respond(send, status, body, extra=()):
        await send({
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *extra,
            ],
        })
        await send({"type": "http.response.body", "body": body})

    async def guarded(scope, receive, send):
        if scope["type"] == "http" and scope["path"] == "/__refused":
            await respond(send, 200, json.dumps({"refused": refusals["n"]}).encode())
            return
        if scope["type"] == "http":
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            if audience not in token_audiences(headers.get("authorization")):
                refusals["n"] += 1
                body = b'{"error":"invalid_token","error_description":"audience is not this server"}'
                await respond(send, 401, body, [(b"www-authenticate", b'Bearer error="invalid_token"')])
                return
        await app(scope, receive, send)

    return guarded


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "0")))
    parser.add_argument("--name", default="mcp-server")
    parser.add_argument("--watch-stdin", action="store_true")
    parser.add_argument("--expect-audience", default=None)
    args = parser.parse_args()

    events = MemoryEventStore()
    if V2:
        server = MCPServer(args.name, log_level="WARNING")
    else:
        server = FastMCP(args.name, log_level="WARNING", event_store=events, host="127.0.0.1")

    def request_headers(ctx):
        if V2:
            return ctx.headers or {}
        request = ctx.request_context.request
        return request.headers if request is not None else {}

    @server.tool()
    async def whoami(ctx: Context) -> str:
        headers = request_headers(ctx)
        return json.dumps(
            {
                "server": args.name,
                "authorization": headers.get("authorization"),
                "host": headers.get("host"),
                "origin": headers.get("origin"),
                "session": headers.get("mcp-session-id"),
            }
        )

    refusals = {"n": 0}

    @server.tool()
    async def progress(steps: int, interval_ms: int, ctx: Context) -> str:
        sent = []
        for i in range(steps):
            if i:
                await asyncio.sleep(interval_ms / 1000)
            sent.append(time.time() * 1000)
            await ctx.report_progress(i + 1, steps, f"step {i + 1}")
        await asyncio.sleep(interval_ms / 1000)
        return json.dumps({"sent": sent})

    @server.tool()
    async def billing_refund(amount: int) -> str:
        return json.dumps({"refunded": amount})

    @server.tool()
    async def admin_wipe() -> str:
        return json.dumps({"wiped": True})

    if V2:
        app = server.streamable_http_app(event_store=events, host="127.0.0.1")
    else:
        app = server.streamable_http_app()

    if args.expect_audience:
        app = audience_guard(app, args.expect_audience, refusals)

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", args.port))
    except OSError as e:
        print(f"mcp-server: error: {e}", file=sys.stderr)
        sys.exit(2)
    sock.listen(128)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2)
    uv = uvicorn.Server(config)

    def stop(*_):
        uv.should_exit = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.watch_stdin:
        def watch():
            sys.stdin.read()
            stop()
        threading.Thread(target=watch, daemon=True).start()

    async def ready():
        while not uv.started:
            await asyncio.sleep(0.02)
        print(f"READY http://127.0.0.1:{port}", flush=True)

    async def run():
        await asyncio.gather(uv.serve(sockets=[sock]), ready())

    asyncio.run(run())
    sys.exit(0)


if __name__ == "__main__":
    main()
