"""A delivery-ETA model service built the way teams build them today: FastAPI + uvicorn,
async handlers, pydantic models, a Redis (or SQLite) feature store, Prometheus metrics and
optional OpenTelemetry. It is the harness's second target and shares no code with
``reference_service`` nor imports ``harness``: see README.md beside this file.
"""
