"""The official Python MCP client as most deployments have it (`mcp` 1.x: `ClientSession` over
`streamablehttp_client`, protocol 2025-11-25 with sessions), driven by the Rust interop harness
like client.py, with the same arguments (no --mode) and the same JSON output."""

import argparse
import asyncio
import json
import sys
import time

from mcp import ClientSession
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.streamable_http import streamablehttp_client
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
            scopes=args.scope,  # 1.x spells it `scopes` (2.x: `scope`)
            issuer=args.issuer,
        )
    if args.origin:
        headers["Origin"] = args.origin
    seen_requests = []

    async def log_request(request):
        seen_requests.append(f"{request.method} {request.url}")

    def factory(headers=None, timeout=None, auth=None):
        client = create_mcp_http_client(headers=headers, timeout=timeout, auth=auth)
        client.event_hooks["request"].append(log_request)
        return client

    out = {}
    async with streamablehttp_client(
        args.url, headers=headers, auth=auth, httpx_client_factory=factory
    ) as (read, write, get_session_id):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            out["protocolVersion"] = init.protocolVersion
            out["sessionId"] = get_session_id()
            tools = await session.list_tools()
            out["tools"] = sorted(t.name for t in tools.tools)
            out["whoami"] = json.loads(text(await session.call_tool("whoami", {})))
            arrived = []

            async def on_progress(progress, total, message):
                arrived.append({"progress": progress, "at": time.time() * 1000})

            result = await session.call_tool(
                "progress", {"steps": 3, "interval_ms": 400}, progress_callback=on_progress
            )
            out["progress"] = {"sent": json.loads(text(result))["sent"], "arrived": arrived}
            out["whoami_again"] = json.loads(text(await session.call_tool("whoami", {})))
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
    p.add_argument("--origin")
    args = p.parse_args()
    try:
        out = asyncio.run(asyncio.wait_for(run(args), 60))
    except BaseException as e:  # report the SDK's error to the harness
        print(json.dumps({"error": f"{type(e).__name__}: {e!r}"}))
        sys.exit(1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
