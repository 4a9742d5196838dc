"""Exports metrics with the OpenTelemetry Python SDK to a running `vigil run`.

Run by tests/otlp_python.rs inside a venv built from tests/otlp/requirements.txt:

    python export.py --protocol grpc --endpoint 127.0.0.1:4317 --service py-grpc --node n1
    python export.py --protocol http --endpoint http://127.0.0.1:4318/v1/metrics ...

For `--seconds` it records, every 100 ms, values that make the test's rules fire:

- gauge `queue.depth` = 500 (rule: threshold above 100);
- counter `jobs.processed` += 100 (rule: rate above 10/s); with `--delta` the exporter
  asks for delta temporality, which Vigil accumulates into a running total;
- histogram `request.duration` (explicit buckets) records 2.0 s (rule: p99 above 1 s);
- histogram `request.size` (exponential buckets, via a View) records 5000 (rule: p50
  above 1000).

The resource carries the Kubernetes attributes Vigil shortens (`k8s.node.name` ->
`node`, ...). Every export's result is checked: the script exits 1 if any export
failed or none happened, so a broken receiver fails the test here, not by a timeout.
"""

import argparse
import sys
import time

from opentelemetry.sdk.metrics import Counter, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExportResult,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource


def exporter_class(protocol):
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter,
        )
        from opentelemetry.exporter.otlp.proto.grpc.exporter import Compression
    else:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
            OTLPMetricExporter,
        )
        from opentelemetry.exporter.otlp.proto.http import Compression
    return OTLPMetricExporter, Compression


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--protocol", choices=["grpc", "http"], required=True)
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--service", required=True)
    ap.add_argument("--node", required=True)
    ap.add_argument("--token", default="")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--delta", action="store_true")
    args = ap.parse_args()

    cls, compression = exporter_class(args.protocol)
    results = []

    class Checked(cls):
        def export(self, metrics_data, timeout_millis=10_000, **kwargs):
            r = super().export(metrics_data, timeout_millis=timeout_millis, **kwargs)
            results.append(r)
            return r

    kwargs = dict(endpoint=args.endpoint, compression=compression.Gzip, timeout=5)
    if args.protocol == "grpc":
        kwargs["insecure"] = True
    if args.token:
        kwargs["headers"] = {"authorization": f"Bearer {args.token}"}
    if args.delta:
        kwargs["preferred_temporality"] = {Counter: AggregationTemporality.DELTA}
    exporter = Checked(**kwargs)

    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=250)
    resource = Resource.create(
        {
            "service.name": args.service,
            "k8s.node.name": args.node,
            "k8s.pod.name": f"{args.service}-0",
            "k8s.namespace.name": "prod",
        }
    )
    provider = MeterProvider(
        resource=resource,
        metric_readers=[reader],
        views=[
            View(
                instrument_name="request.size",
                aggregation=ExponentialBucketHistogramAggregation(),
            ),
        ],
    )
    meter = provider.get_meter("vigil.test", "1.0")
    depth = meter.create_gauge("queue.depth")
    jobs = meter.create_counter("jobs.processed")
    duration = meter.create_histogram(
        "request.duration",
        unit="s",
        explicit_bucket_boundaries_advisory=[0.01, 0.05, 0.1, 0.5, 1.0, 5.0],
    )
    size = meter.create_histogram("request.size", unit="By")

    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        depth.set(500, {"queue": "ingest"})
        jobs.add(100, {"queue": "ingest"})
        duration.record(2.0, {"route": "/api"})
        size.record(5000, {"route": "/api"})
        time.sleep(0.1)

    provider.force_flush()
    provider.shutdown()
    failed = [r for r in results if r != MetricExportResult.SUCCESS]
    print(f"{args.protocol}: {len(results)} exports, {len(failed)} failed", flush=True)
    if not results or failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
