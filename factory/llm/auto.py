"""Model auto-resolution: what 'auto' means for the provider configured in the environment.

Paper-like defaults (DynaGuard, Section 3.2): a smaller model writes the data (paraphrases,
personas, dialogues) and a larger one judges it (labels, reasoning traces), so the writer never
grades its own dialogues. `FACTORY_MODEL` pins one model for every stage; an OpenAI-compatible
server given by `OPENAI_BASE_URL` alone (vLLM, llama.cpp server, Ollama) uses the one model it
serves for every stage. With no provider configured, 'auto' is the embedded local model.

This is the one place that may ask a server which model it serves (network I/O); configuration
objects (recipes) only hold specs and never call out.
"""

from __future__ import annotations

import os
from typing import Literal

from factory.llm.config import EndpointConfig, configured_remote

LOCAL_SPEC = "local:smollm2-135m"
Role = Literal["writer", "judge"]

# provider -> role -> model. Overridable per stage with --model-for or the recipe's `models`.
ROLE_DEFAULTS: dict[str, dict[str, str]] = {
    "openai": {"writer": "gpt-4.1-mini", "judge": "gpt-4o"},
    "anthropic": {"writer": "claude-haiku-4-5", "judge": "claude-sonnet-4-5"},
    "google": {"writer": "gemini-2.0-flash", "judge": "gemini-2.5-flash"},
}


def resolve_auto(spec: str, role: Role = "writer") -> str:
    """'auto': the provider configured in the environment (its model for this role), else the
    embedded local model. Any other spec is returned as it is."""
    if spec != "auto":
        return spec
    remote = configured_remote()
    if remote is None:
        return LOCAL_SPEC
    if os.environ.get("FACTORY_MODEL"):
        return remote.spec
    if remote.provider == "openai" and remote.resolved_base_url():
        served = first_served_model(remote)
        return f"openai:{served}" if served else remote.spec
    return f"{remote.provider}:{ROLE_DEFAULTS[remote.provider][role]}"


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
