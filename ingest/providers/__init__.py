"""Model providers (issue 19): one interface, `generate(request) -> answer` (the JSON and
its token usage), the offline deterministic default, an OpenAI-compatible provider, an
Anthropic one (`kind: anthropic`), and
the router that falls back between them per purpose. Built from settings here."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable

from aggregates.ports import ModelProvider
from ingest.providers.anthropic_messages import AnthropicProvider
from ingest.providers.model_nodes import offline_provider
from ingest.providers.openai_compatible import OpenAICompatibleProvider
from ingest.providers.router import ModelRouter, RoutingPolicy
from runtime.clock import Clock, system_clock
from runtime.settings import Settings

__all__ = ["ModelRouter", "open_model_router", "router_settings_key"]


def open_model_router(
    settings: Settings,
    *,
    clock: Clock = system_clock,
    monotonic: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> ModelRouter:
    providers: list[ModelProvider] = [offline_provider()]
    for spec in settings.model_providers:
        if spec.kind == "anthropic":
            providers.append(
                AnthropicProvider(
                    spec.name,
                    base_url=str(spec.base_url),
                    model=spec.model,
                    api_key=spec.api_key.get_secret_value() if spec.api_key else None,
                    timeout=spec.timeout or settings.model_timeout,
                    max_output_bytes=settings.model_max_output_bytes,
                    clock=clock,
                )
            )
            continue
        providers.append(
            OpenAICompatibleProvider(
                spec.name,
                base_url=str(spec.base_url),
                model=spec.model,
                api_key=spec.api_key.get_secret_value() if spec.api_key else None,
                timeout=spec.timeout or settings.model_timeout,
                token_parameter=spec.token_parameter,
                max_output_bytes=settings.model_max_output_bytes,
                clock=clock,
            )
        )
    policy = RoutingPolicy(
        cooldown=settings.model_cooldown,
        auth_cooldown=settings.model_auth_cooldown,
        retry_after_max=settings.model_retry_after_max,
    )
    return ModelRouter(
        providers,
        settings.model_routes,
        settings.model_default_route,
        policy,
        monotonic=monotonic,
        sleep=sleep,
    )


def router_settings_key(settings: Settings) -> str:
    """What a router is built from: a process keeps its router (and its cooldowns) while
    this stays the same."""
    fields = {
        "model_providers",
        "model_routes",
        "model_default_route",
        "model_timeout",
        "model_cooldown",
        "model_auth_cooldown",
        "model_retry_after_max",
        "model_max_output_bytes",
    }
    keys = [
        spec.api_key.get_secret_value() if spec.api_key else "" for spec in settings.model_providers
    ]
    # Keys take part only as a digest (a dump shows secrets masked, so a new key would not
    # change it); the digest stays in memory.
    material = settings.model_dump_json(include=fields) + json.dumps(keys)
    return hashlib.sha256(material.encode()).hexdigest()
