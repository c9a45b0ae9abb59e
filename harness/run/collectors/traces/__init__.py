"""Stages from OpenTelemetry traces: an OTLP receiver for the run, and the join of the
service's spans to the load driver's requests (one trace per request).

``spans`` (the decoded, bounded span store), ``receiver`` (OTLP/gRPC + OTLP/HTTP),
``spanmap`` (which stage a span belongs to), ``join`` (per request: server span, stage
times, residual) and ``collector`` (the collector that runs them and writes the stage
series into the run directory).
"""
