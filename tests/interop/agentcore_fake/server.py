"""A fake AgentCore Runtime data plane that checks SigV4 with botocore's own signer.

`POST /runtimes/{url-escaped ARN}/invocations?qualifier=Q`: the Authorization header is parsed,
the request is rebuilt from exactly the headers it says it signed (SignedHeaders), and botocore's
`SigV4Auth` recomputes the signature for the credential it names. Any mismatch answers 403
`InvalidSignatureException`, as AWS would. Also refused (403): a credential scope that is not
`<date>/<region>/bedrock-agentcore/aws4_request`, an `x-amz-date` more than 5 minutes off, a
temporary credential (access key `ASIA...`) without its `x-amz-security-token` signed, and an
`x-amz-content-sha256` that is neither `UNSIGNED-PAYLOAD` nor the SHA-256 of the body received.

Secrets: the secret of access key `K` is `secret-K`; the session token of a temporary key `K`
is `token-K` (so any key works, including ones a credential_process invents).

On success: JSON `{"arn", "qualifier", "headers", "bodyBytes", "payload", "unsignedPayload",
"accessKey"}`, or, when the JSON body has `"stream": N`, an SSE stream of N events 100 ms apart.
`GET /__requests` lists every request seen (`{"path", "ok", "reason", "accessKey"}`).

Follows the interop READY protocol (tests/interop/README.md): `--port 0`, `READY <url>`,
SIGTERM exits 0, `--watch-stdin`.
"""

import argparse
import asyncio
import datetime
import hashlib
import json
import signal
import socket
import sys
import threading
import urllib.parse

import uvicorn
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

SEEN = []


def check(method, raw_path, query, headers, body):
    """None if the signature is right, else why not."""
    auth = headers.get("authorization", "")
    if not auth.startswith("AWS4-HMAC-SHA256 "):
        return "no SigV4 Authorization header", None
    fields = dict(
        part.strip().split("=", 1) for part in auth[len("AWS4-HMAC-SHA256 ") :].split(",")
    )
    access_key, date, region, service, terminal = fields["Credential"].split("/")
    if service != "bedrock-agentcore" or terminal != "aws4_request":
        return f"bad credential scope {fields['Credential']}", access_key
    amz_date = headers.get("x-amz-date", "")
    if amz_date[:8] != date:
        return "x-amz-date does not match the credential scope date", access_key
    when = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
    if abs((datetime.datetime.now(datetime.timezone.utc) - when).total_seconds()) > 300:
        return "x-amz-date is more than 5 minutes off", access_key
    signed = fields["SignedHeaders"].split(";")
    if "host" not in signed or "x-amz-date" not in signed:
        return "host and x-amz-date must be signed", access_key
    token = None
    if access_key.startswith("ASIA"):
        token = f"token-{access_key}"
        if headers.get("x-amz-security-token") != token or "x-amz-security-token" not in signed:
            return "temporary credentials without their session token signed", access_key
    sha = headers.get("x-amz-content-sha256")
    if sha is None or "x-amz-content-sha256" not in signed:
        return "x-amz-content-sha256 missing or unsigned", access_key
    if sha != "UNSIGNED-PAYLOAD" and sha != hashlib.sha256(body).hexdigest():
        return "x-amz-content-sha256 is not the SHA-256 of the body", access_key
    url = f"https://{headers['host']}{raw_path}" + (f"?{query}" if query else "")
    request = AWSRequest(
        method=method, url=url, headers={name: headers[name] for name in signed}, data=body
    )
    request.context["timestamp"] = amz_date
    signer = SigV4Auth(Credentials(access_key, f"secret-{access_key}", token), service, region)
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if expected != fields["Signature"]:
        return f"signature mismatch; canonical request was:\n{canonical}", access_key
    return None, access_key


async def read_body(receive):
    body = bytearray()
    while True:
        message = await receive()
        body.extend(message.get("body", b""))
        if not message.get("more_body"):
            return bytes(body)


async def send_json(send, status, value, extra=()):
    data = json.dumps(value).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/__requests":
        await send_json(send, 200, SEEN)
        return
    raw_path = scope["raw_path"].decode()
    query = scope["query_string"].decode()
    headers = {}
    for k, v in scope["headers"]:
        name = k.decode().lower()
        headers[name] = f"{headers[name]},{v.decode()}" if name in headers else v.decode()
    body = await read_body(receive)
    reason, access_key = check(scope["method"], raw_path, query, headers, body)
    SEEN.append({"path": raw_path, "ok": reason is None, "reason": reason, "accessKey": access_key})
    if reason is not None:
        print(f"agentcore-fake: refused: {reason}", file=sys.stderr)
        await send_json(
            send, 403, {"message": "The request signature we calculated does not match the signature you provided."},
            [(b"x-amzn-errortype", b"InvalidSignatureException")],
        )
        return
    parts = raw_path.split("/")
    if len(parts) != 4 or parts[1] != "runtimes" or parts[3] != "invocations":
        await send_json(send, 404, {"message": "unknown path"})
        return
    arn = urllib.parse.unquote(parts[2])
    qualifier = urllib.parse.parse_qs(query).get("qualifier", [None])[0]
    session = headers.get("x-amzn-bedrock-agentcore-runtime-session-id", "")
    try:
        payload = json.loads(body) if body else None
    except ValueError:
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("stream"), int):
        await send({
            "type": "http.response.start", "status": 200,
            "headers": [(b"content-type", b"text/event-stream"),
                        (b"x-amzn-bedrock-agentcore-runtime-session-id", session.encode())],
        })
        for i in range(payload["stream"]):
            if i:
                await asyncio.sleep(0.1)
            event = json.dumps({"index": i, "arn": arn})
            await send({"type": "http.response.body", "body": f"data: {event}\n\n".encode(), "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    await send_json(
        send, 200,
        {
            "arn": arn, "qualifier": qualifier, "headers": headers, "bodyBytes": len(body),
            "payload": payload if len(body) < 65536 else None,
            "unsignedPayload": headers.get("x-amz-content-sha256") == "UNSIGNED-PAYLOAD",
            "accessKey": access_key,
        },
        [(b"x-amzn-bedrock-agentcore-runtime-session-id", session.encode())],
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--watch-stdin", action="store_true")
    args = parser.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", args.port))
    except OSError as e:
        print(f"agentcore-fake: error: {e}", file=sys.stderr)
        sys.exit(2)
    sock.listen(128)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))

    def stop(*_):
        server.should_exit = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.watch_stdin:
        threading.Thread(target=lambda: (sys.stdin.read(), stop()), daemon=True).start()

    async def ready():
        while not server.started:
            await asyncio.sleep(0.02)
        print(f"READY http://127.0.0.1:{port}", flush=True)

    async def run():
        await asyncio.gather(server.serve(sockets=[sock]), ready())

    asyncio.run(run())
    sys.exit(0)


if __name__ == "__main__":
    main()
