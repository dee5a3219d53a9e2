"""A minimal OTLP trace receiver for the interop tests, built only on the official protocol
definitions (PyPI `opentelemetry-proto`) and gRPC (`grpcio`); no gatehouse code.

    receiver.py --protocol grpc|http --out FILE [--port 0] [--fail] [--watch-stdin]

Serves OTLP/gRPC (`opentelemetry.proto.collector.trace.v1.TraceService/Export`) or
OTLP/HTTP protobuf (`POST /v1/traces`, `application/x-protobuf`) on 127.0.0.1 and appends
every received span to FILE as one JSON line:

    {"trace_id": hex, "span_id": hex, "parent_span_id": hex|"", "name": str, "kind": "SERVER"|...,
     "start_ns": int, "end_ns": int, "attributes": {key: value}, "status": {"code": "ERROR"|..., "message": str},
     "flags": int, "resource": {key: value}, "scope": {"name": str, "version": str}, "protocol": "grpc"|"http"}

`--fail` answers every export with an error (gRPC UNAVAILABLE / HTTP 503), for failure tests.
Follows the READY protocol of tests/interop/README.md: one `READY http://127.0.0.1:<port>` line
on stdout, logs on stderr, SIGTERM/SIGINT or (with --watch-stdin) stdin EOF exits 0.
"""

import argparse
import json
import signal
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

KINDS = {v: k.replace("SPAN_KIND_", "") for k, v in trace_pb2.Span.SpanKind.items()}
CODES = {v: k.replace("STATUS_CODE_", "") for k, v in trace_pb2.Status.StatusCode.items()}
LOCK = threading.Lock()


def any_value(value):
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, kind) if kind else None


def attributes(kvs):
    return {kv.key: any_value(kv.value) for kv in kvs}


def record(request, out, protocol):
    lines = []
    for resource_spans in request.resource_spans:
        resource = attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            scope = {"name": scope_spans.scope.name, "version": scope_spans.scope.version}
            for span in scope_spans.spans:
                lines.append(json.dumps({
                    "trace_id": span.trace_id.hex(),
                    "span_id": span.span_id.hex(),
                    "parent_span_id": span.parent_span_id.hex(),
                    "name": span.name,
                    "kind": KINDS.get(span.kind, str(span.kind)),
                    "start_ns": span.start_time_unix_nano,
                    "end_ns": span.end_time_unix_nano,
                    "attributes": attributes(span.attributes),
                    "status": {"code": CODES.get(span.status.code, str(span.status.code)),
                               "message": span.status.message},
                    "flags": span.flags,
                    "trace_state": span.trace_state,
                    "resource": resource,
                    "scope": scope,
                    "protocol": protocol,
                }))
    with LOCK, open(out, "a", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")
    return len(lines)


class Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, out, fail):
        self.out, self.fail = out, fail

    def Export(self, request, context):
        if self.fail:
            context.abort(grpc.StatusCode.UNAVAILABLE, "receiver told to fail")
        record(request, self.out, "grpc")
        return trace_service_pb2.ExportTraceServiceResponse()


def http_handler(out, fail):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            if self.path != "/v1/traces":
                self.send_error(404)
                return
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            if fail:
                self.send_response(503)
                self.end_headers()
                return
            request = trace_service_pb2.ExportTraceServiceRequest()
            request.ParseFromString(body)
            record(request, out, "http")
            reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):
            pass

    return Handler


def main():
    parser = argparse.ArgumentParser(prog="otlp-receiver")
    parser.add_argument("--protocol", choices=["grpc", "http"], default="grpc")
    parser.add_argument("--out", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--fail", action="store_true")
    parser.add_argument("--watch-stdin", action="store_true")
    args = parser.parse_args()
    open(args.out, "a").close()

    stop = threading.Event()
    if args.protocol == "grpc":
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(args.out, args.fail), server)
        port = server.add_insecure_port(f"127.0.0.1:{args.port}")
        if port == 0:
            print(f"otlp-receiver: error: cannot bind 127.0.0.1:{args.port}", file=sys.stderr)
            sys.exit(2)
        server.start()
        shutdown = lambda: server.stop(0)
    else:
        server = ThreadingHTTPServer(("127.0.0.1", args.port), http_handler(args.out, args.fail))
        port = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        shutdown = server.shutdown

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if args.watch_stdin:
        threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    print(f"READY http://127.0.0.1:{port}", flush=True)
    stop.wait()
    shutdown()
    sys.exit(0)


if __name__ == "__main__":
    main()
