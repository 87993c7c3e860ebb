"""Model auto-resolution: what 'auto' means for the provider configured in the environment.

This is the one place that may ask a server which model it serves (network I/O); configuration
objects (recipes) only hold specs and never call out.
"""

from __future__ import annotations

import os

from factory.llm.config import EndpointConfig, configured_remote

LOCAL_SPEC = "local:smollm2-135m"


def resolve_auto(spec: str) -> str:
    """'auto': the provider configured in the environment, else the embedded local model."""
    if spec != "auto":
        return spec
    remote = configured_remote()
    if remote is None:
        return LOCAL_SPEC
    if remote.provider == "openai" and not os.environ.get("FACTORY_MODEL") and remote.resolved_base_url():
        served = first_served_model(remote)
        if served:
            return f"openai:{served}"
    return remote.spec


def first_served_model(cfg: EndpointConfig) -> str | None:
    """Ask an OpenAI-compatible server (vLLM, llama.cpp, Ollama) which model it serves."""
    import openai

    try:
        client = openai.OpenAI(
            api_key=cfg.api_key() or "unused", base_url=cfg.resolved_base_url(), max_retries=1, timeout=10
        )
        models = client.models.list()
        return models.data[0].id if models.data else None
    except Exception:  # noqa: BLE001 - fall back to the default model name
        return None
