"""A monitoring service's token (the `health:read` scope) for the health details and
`/metrics` (issue 15, L3), added to the app's settings without writing anything."""

from __future__ import annotations

from fastapi.testclient import TestClient

from runtime.settings import ServiceTokenSpec

MONITOR_TOKEN = "monitor-secret-RETRO-CLOCK"


def monitor_headers(client: TestClient) -> dict[str, str]:
    services = client.app.state.services  # type: ignore[attr-defined]
    settings = services.settings
    if not any(spec.name == "monitor" for spec in settings.service_tokens):
        monitor = ServiceTokenSpec(name="monitor", scopes=["health:read"], secrets=[MONITOR_TOKEN])
        services.settings = settings.model_copy(
            update={"service_tokens": [*settings.service_tokens, monitor]}
        )
    return {"Authorization": f"Bearer {MONITOR_TOKEN}"}
