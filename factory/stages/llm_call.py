"""The one way a stage calls an LLM: render its prompt, call, count, and turn failures into drops."""

from __future__ import annotations

from pydantic import BaseModel

from factory.llm.config import API_KEY_ENV
from factory.llm.errors import FatalProviderError, LLMError
from factory.llm.types import GenParams, LLMRequest, LLMResponse
from factory.stages.context import BuildContext, SlotDropped
from factory.stages.prompt_templates import load_prompt


async def stage_call(ctx: BuildContext, stage: str, prompt: str, schema: type[BaseModel], *,
                     slot: int, temperature: float, max_tokens: int, variant: str = "",
                     **values: object) -> tuple[LLMResponse, str]:
    """Returns (response, prompt_hash). Provider/validation failures become SlotDropped;
    fatal configuration errors (bad key, unknown model) propagate and stop the build."""
    template = load_prompt(prompt)
    request = LLMRequest(messages=template.render(**values),
                         params=GenParams(temperature=temperature, max_tokens=max_tokens, seed=ctx.seed),
                         output_schema=schema, stage=stage, prompt_hash=template.hash, variant=variant)
    counts = ctx.count(stage)
    counts.started += 1
    try:
        response = await ctx.client.complete(ctx.endpoints[stage], request)
    except FatalProviderError as exc:
        named = _name_key_variable(exc, ctx.endpoints[stage].provider)
        if named is exc:
            raise
        raise named from exc
    except LLMError as exc:
        counts.failed += 1
        ctx.store.add("llm_failures", {"slot": slot, "stage": stage, "provider": exc.provider, "model": exc.model,
                                       "error": str(exc), "raw_text": getattr(exc, "raw_text", ""),
                                       "attempts": getattr(exc, "attempts", 0)})
        raise SlotDropped(stage, "llm_failure", str(exc)[:300]) from exc
    counts.done += 1
    return response, template.hash


def _name_key_variable(exc: FatalProviderError, provider: str) -> FatalProviderError:
    """A rejected key (401/403) names the environment variable it came from, so the user knows what to fix."""
    names = API_KEY_ENV.get(provider, ())
    if exc.status not in (401, 403) or not names or any(n in str(exc) for n in names):
        return exc
    var = " or ".join(names)
    return FatalProviderError(f"provider {provider} rejected the API key read from {var}: {exc} "
                              f"Set a valid key in {var}, or pick another provider with --model.",
                              provider=exc.provider, model=exc.model, status=exc.status)
