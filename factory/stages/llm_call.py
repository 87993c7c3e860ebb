"""The one way a stage calls an LLM: render its prompt, call, count, and turn failures into drops."""

from __future__ import annotations

from pydantic import BaseModel

from factory.llm.errors import FatalProviderError, LLMError
from factory.llm.types import GenParams, LLMRequest, LLMResponse
from factory.stages.context import BuildContext, SlotDropped
from factory.stages.prompt_templates import load_prompt


async def stage_call(
    ctx: BuildContext,
    stage: str,
    prompt: str,
    schema: type[BaseModel],
    *,
    slot: int,
    temperature: float,
    max_tokens: int,
    variant: str = "",
    **values: object,
) -> tuple[LLMResponse, str]:
    """Returns (response, prompt_hash). Provider/validation failures become SlotDropped;
    fatal configuration errors (bad key, unknown model) propagate and stop the build."""
    template = load_prompt(prompt)
    request = LLMRequest(
        messages=template.render(**values),
        params=GenParams(temperature=temperature, max_tokens=max_tokens, seed=ctx.seed),
        output_schema=schema,
        stage=stage,
        prompt_hash=template.hash,
        variant=variant,
    )
    counts = ctx.count(stage)
    counts.started += 1
    try:
        response = await ctx.client.complete(ctx.endpoints[stage], request)
    except FatalProviderError:
        raise  # bad key, unknown model...: stop the build, the message says what to fix
    except LLMError as exc:
        counts.failed += 1
        ctx.store.add(
            "llm_failures",
            {
                "slot": slot,
                "stage": stage,
                "provider": exc.provider,
                "model": exc.model,
                "error": str(exc),
                "raw_text": getattr(exc, "raw_text", ""),
                "attempts": getattr(exc, "attempts", 0),
            },
        )
        raise SlotDropped(stage, "llm_failure", str(exc)[:300]) from exc
    counts.done += 1
    return response, template.hash
