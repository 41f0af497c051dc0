"""The API observing itself: Prometheus metrics, correlation ids in logs, OpenTelemetry self-tracing, readiness."""

from agl.observability.install import install_observability

__all__ = ["install_observability"]
