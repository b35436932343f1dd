#!/usr/bin/env python3
"""Exports known spans with the OpenTelemetry Python SDK (an independent OTLP/HTTP protobuf
encoder) to check the test receiver. Usage: otlp_export.py <traces-url> [gzip|none]"""
import sys

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

url = sys.argv[1]
comp = Compression.Gzip if len(sys.argv) > 2 and sys.argv[2] == "gzip" else Compression.NoCompression
provider = TracerProvider(resource=Resource.create({"service.name": "py-selftest", "process.pid": 4242}))
provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=url, compression=comp)))
tracer = provider.get_tracer("selftest-scope", "1.2.3")
with tracer.start_as_current_span("GET /hello", kind=SpanKind.SERVER) as srv:
    srv.set_attribute("http.request.method", "GET")
    srv.set_attribute("http.response.status_code", 503)
    srv.set_attribute("url.path", "/hello")
    srv.set_attribute("flag", True)
    srv.set_attribute("ratio", 0.5)
    srv.set_attribute("tags", ["a", "b"])
    srv.set_status(Status(StatusCode.ERROR))
    with tracer.start_as_current_span("GET", kind=SpanKind.CLIENT) as cli:
        cli.set_attribute("url.full", "http://127.0.0.1:1/x?password=REDACTED")
        cli.set_attribute("server.port", 1)
provider.shutdown()
