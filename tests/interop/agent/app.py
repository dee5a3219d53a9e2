"""gatehouse interop peer: an echo agent built with the AgentCore Python SDK (bedrock-agentcore).

It follows the AgentCore Runtime HTTP contract through the SDK's own ``BedrockAgentCoreApp``:
``POST /invocations``, ``GET /ping`` (and the SDK's ``/ws``). The entrypoint echoes what the agent
code saw, so tests can assert on what gatehouse forwarded:

    {
      "payload":         <the JSON payload as parsed by the SDK>,
      "session_id":      context.session_id   (X-Amzn-Bedrock-AgentCore-Runtime-Session-Id, or null),
      "request_id":      BedrockAgentCoreContext.get_request_id()  (the request-id header, or a uuid4
                                                                     the SDK made up),
      "request_headers": context.request_headers  (the SDK-FILTERED dict agent code gets, or null),
      "raw_headers":     [[name, value], ...]  every header as received, in order (lower-case names),
      "method", "path", "query": from the underlying Starlette request,
      "client":          peer address as "host:port",
      "body_bytes":      length of the request body,
      "workload_access_token": BedrockAgentCoreContext.get_workload_access_token() (or null)
    }

Payload options (all optional):
    {"stream": N}          answer as SSE: N events ``{"index": i, "of": N, "session_id": ...}``, then
                           a final event ``{"done": true, "echo": <the echo object above>}``
    {"interval_ms": M}     with "stream": wait M ms before each event (default 0)
    {"sleep_ms": M}        wait M ms before answering (timeouts)
    {"status": S}          answer with HTTP status S (the echo object is still the JSON body)
    {"headers": {...}}     extra response headers (non-streaming answers only)
    {"error": "msg"}       with "stream": raise mid-stream after the events (the SDK turns it into an
                           error event)

Protocol with a test harness:
    stdout: one line ``READY http://127.0.0.1:<port>`` once ``GET /ping`` answers 200; nothing else.
    stderr: logs.
    SIGTERM / SIGINT: stop accepting, finish in-flight requests (up to --grace seconds), exit 0.

usage: .interop/venv/bin/python tests/interop/agent/app.py [--port N] [--host ADDR] [--grace S]
                                                           [--verbose] [--watch-stdin]
       (env AGENT_PORT or PORT, AGENT_HOST, AGENT_GRACE, AGENT_VERBOSE=1, AGENT_WATCH_STDIN=1)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
import threading
import time
import urllib.request

from starlette.responses import JSONResponse

from bedrock_agentcore import BedrockAgentCoreApp
from bedrock_agentcore.runtime.context import BedrockAgentCoreContext

app = BedrockAgentCoreApp()


def _echo(payload, context) -> dict:
    request = getattr(context, "request", None)
    raw_headers = []
    method = path = query = client = None
    if request is not None:
        raw_headers = [[k, v] for k, v in request.headers.items()]
        method = request.method
        path = request.url.path
        query = request.url.query
        if request.client is not None:
            client = f"{request.client.host}:{request.client.port}"
    return {
        "payload": payload,
        "session_id": getattr(context, "session_id", None),
        "request_id": BedrockAgentCoreContext.get_request_id(),
        "request_headers": getattr(context, "request_headers", None),
        "raw_headers": raw_headers,
        "method": method,
        "path": path,
        "query": query,
        "client": client,
        "body_bytes": _body_len(request),
        "workload_access_token": BedrockAgentCoreContext.get_workload_access_token(),
    }


def _body_len(request):
    if request is None:
        return None
    body = getattr(request, "_body", None)  # Starlette caches the body the SDK already read
    if isinstance(body, (bytes, bytearray)):
        return len(body)
    try:
        return int(request.headers.get("content-length", ""))
    except ValueError:
        return None


def _int_option(payload, key, default=0):
    if isinstance(payload, dict) and key in payload:
        try:
            return int(payload[key])
        except (TypeError, ValueError):
            return default
    return default


@app.entrypoint
def invoke(payload, context):
    """Echo entrypoint: a plain function (the SDK runs it in its thread pool)."""
    echo = _echo(payload, context)
    sleep_ms = _int_option(payload, "sleep_ms")
    if sleep_ms > 0:
        time.sleep(sleep_ms / 1000)

    if isinstance(payload, dict) and "stream" in payload:
        count = max(0, _int_option(payload, "stream"))
        interval = max(0, _int_option(payload, "interval_ms")) / 1000
        error = payload.get("error")

        def events():
            for i in range(count):
                if interval:
                    time.sleep(interval)
                yield {"index": i, "of": count, "session_id": echo["session_id"]}
            if error:
                raise RuntimeError(str(error))
            yield {"done": True, "echo": echo}

        # the SDK turns a returned generator into text/event-stream, one `data: <json>` frame per item
        return events()

    status = _int_option(payload, "status", 200)
    headers = payload.get("headers") if isinstance(payload, dict) else None
    if status != 200 or headers:
        return JSONResponse(echo, status_code=status, headers={str(k): str(v) for k, v in (headers or {}).items()})
    return echo


# ---------------------------------------------------------------------------------------------
# Serving. BedrockAgentCoreApp.run(port=8080, host=None) calls uvicorn.run(app, host, port, ...);
# host defaults to 127.0.0.1 (0.0.0.0 inside Docker). To support --port 0 without a race we bind the
# socket ourselves and hand it to uvicorn.Server, serving the same SDK app object.


def _log(msg: str) -> None:
    sys.stderr.write(f"agent: {msg}\n")
    sys.stderr.flush()


def main(argv=None) -> int:
    env = os.environ
    parser = argparse.ArgumentParser(description="AgentCore SDK echo agent for gatehouse interop tests")
    parser.add_argument("--port", type=int, default=int(env.get("AGENT_PORT") or env.get("PORT") or 0),
                        help="listen port; 0 picks a free one (default 0)")
    parser.add_argument("--host", default=env.get("AGENT_HOST", "127.0.0.1"), help="listen address (default 127.0.0.1)")
    parser.add_argument("--grace", type=float, default=float(env.get("AGENT_GRACE", "3")),
                        help="seconds to let in-flight requests finish on SIGTERM (default 3)")
    parser.add_argument("--verbose", action="store_true", default=env.get("AGENT_VERBOSE", "") not in ("", "0"),
                        help="SDK INFO logs and uvicorn access log on stderr")
    parser.add_argument("--watch-stdin", action="store_true",
                        default=env.get("AGENT_WATCH_STDIN", "") not in ("", "0"),
                        help="exit when stdin reaches EOF (the harness keeps a pipe open)")
    args = parser.parse_args(argv)

    import uvicorn

    # The SDK logs every invocation at INFO to a stderr StreamHandler; keep stderr quiet unless asked
    # (a harness that pipes stderr without draining it must not block us).
    logging.getLogger("bedrock_agentcore.app").setLevel(logging.INFO if args.verbose else logging.WARNING)

    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as e:
        _log(f"error: cannot bind {args.host}:{args.port}: {e}")
        return 2
    sock.listen(128)
    port = sock.getsockname()[1]
    host_part = f"[{args.host}]" if ":" in args.host else args.host
    base = f"http://{host_part}:{port}"

    log_config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "agent: uvicorn %(levelname)s %(message)s"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "formatter": "plain"}},
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": "INFO" if args.verbose else "WARNING", "propagate": False},
            "uvicorn.access": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        },
    }
    config = uvicorn.Config(
        app,
        log_config=log_config,
        access_log=args.verbose,
        timeout_graceful_shutdown=args.grace,
        lifespan="off",
    )
    server = uvicorn.Server(config)

    def announce_when_ready():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not server.should_exit:
            if server.started:
                try:
                    with urllib.request.urlopen(f"{base}/ping", timeout=2) as r:
                        if r.status == 200:
                            sys.stdout.write(f"READY {base}\n")
                            sys.stdout.flush()
                            _log(f"listening on {base} (bedrock-agentcore SDK app)")
                            return
                except OSError:
                    pass
            time.sleep(0.02)
        _log("error: /ping did not answer within 30s")
        server.should_exit = True

    threading.Thread(target=announce_when_ready, name="ready", daemon=True).start()

    if args.watch_stdin:
        def watch_stdin():
            try:
                # os.read, not sys.stdin.buffer: a daemon thread blocked inside the buffered
                # reader holds its lock at interpreter shutdown, which aborts the process.
                while os.read(sys.stdin.fileno(), 65536):
                    pass
            except OSError:
                pass
            _log("stdin closed, shutting down")
            server.should_exit = True

        threading.Thread(target=watch_stdin, name="stdin", daemon=True).start()

    # uvicorn captures SIGTERM/SIGINT for a graceful shutdown and afterwards re-raises the signal
    # with the handlers that were installed before it: make those exit 0.
    def exit_clean(signum, frame):
        _log(f"stopped by signal {signum}")
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, exit_clean)
    signal.signal(signal.SIGINT, exit_clean)

    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
