"""The official Python MCP client (`mcp` 2.x) against an MCP URL, driven by the Rust interop
harness. Prints one JSON object on stdout with what it saw; exits non-zero on failure.

usage: client.py URL (--token T | --client-id ID --client-secret S --issuer I --scope SC)
                 [--mode legacy|auto] [--origin O]

- `--token`: a bearer token obtained beforehand, sent on every request.
- `--client-id/--client-secret`: the SDK's own OAuth client-credentials provider: it meets the
  401, fetches the protected resource metadata and the authorization server metadata, gets a
  token for the `resource` the metadata names, and retries.
- `--mode legacy`: the 2025-11-25 initialize handshake and a session; `auto`: the SDK probes and
  uses the stateless 2026-07-28 protocol when the server speaks it.
- `--call TOOL [--args JSON]`: instead of the usual calls, list the tools and call TOOL once;
  `call` in the output is `{"result": text}` or `{"error": {"code", "message"}}` as the SDK
  reported it.
"""

import argparse
import asyncio
import json
import sys
import time

import httpx2
from mcp import Client, MCPError
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


class MemoryStorage:
    def __init__(self):
        self.tokens = None
        self.info = None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens):
        self.tokens = tokens

    async def get_client_info(self):
        return self.info

    async def set_client_info(self, info):
        self.info = info


def text(result):
    return "".join(getattr(c, "text", "") for c in result.content)


async def run(args):
    headers = {}
    auth = None
    if args.token:
        headers["Authorization"] = f"Bearer {args.token}"
    else:
        auth = ClientCredentialsOAuthProvider(
            server_url=args.url,
            storage=MemoryStorage(),
            client_id=args.client_id,
            client_secret=args.client_secret,
            scope=args.scope,
            issuer=args.issuer,
        )
    if args.origin:
        headers["Origin"] = args.origin
    seen_requests = []

    async def log_request(request):
        seen_requests.append(f"{request.method} {request.url}")

    http = create_mcp_http_client(headers=headers, auth=auth)
    http.event_hooks["request"].append(log_request)
    out = {}
    async with http:
        async with Client(streamable_http_client(args.url, http_client=http), mode=args.mode) as client:
            tools = await client.list_tools()
            out["tools"] = sorted(t.name for t in tools.tools)
            if args.call:
                try:
                    result = await client.call_tool(args.call, json.loads(args.args))
                    out["call"] = {"result": text(result), "is_error": bool(getattr(result, "is_error", None) or getattr(result, "isError", False))}
                except MCPError as e:
                    out["call"] = {"error": {"code": e.error.code, "message": e.error.message}}
                out["requests"] = seen_requests
                return out
            out["whoami"] = json.loads(text(await client.call_tool("whoami", {})))
            arrived = []

            async def on_progress(progress, total, message):
                arrived.append({"progress": progress, "at": time.time() * 1000})

            result = await client.call_tool(
                "progress", {"steps": 3, "interval_ms": 400}, progress_callback=on_progress
            )
            out["progress"] = {"sent": json.loads(text(result))["sent"], "arrived": arrived}
            out["whoami_again"] = json.loads(text(await client.call_tool("whoami", {})))
    out["requests"] = seen_requests
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("--token")
    p.add_argument("--client-id")
    p.add_argument("--client-secret")
    p.add_argument("--issuer")
    p.add_argument("--scope")
    p.add_argument("--mode", default="legacy")
    p.add_argument("--origin")
    p.add_argument("--call")
    p.add_argument("--args", default="{}")
    args = p.parse_args()
    try:
        out = asyncio.run(asyncio.wait_for(run(args), 60))
    except BaseException as e:  # report the SDK's error to the harness
        print(json.dumps({"error": f"{type(e).__name__}: {e!r}"}))
        sys.exit(1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
