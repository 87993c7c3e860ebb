"""The one way a stage calls an LLM: render its prompt, call, count, and turn failures into drops.

The result carries the call's provenance (model, prompt hash, cache key), which every stage table
stores next to its rows. Failures reach `llm_failures` through the client's failure sink.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from factory.llm.errors import StructuredOutputError
from factory.llm.types import GenParams, LLMRequest, LLMResponse
from factory.prompt_templates import load_prompt
from factory.stages.context import BuildContext, SlotDropped


@dataclass(frozen=True)
class StageCall:
    response: LLMResponse
    model: str  # provider:model spec of the stage's endpoint
    prompt_hash: str

    @property
    def parsed(self) -> Any:
        return self.response.parsed

    @property
    def provenance(self) -> dict[str, str]:
        """The columns every LLM stage table has: model, prompt_hash, call_key."""
        return {"model": self.model, "prompt_hash": self.prompt_hash, "call_key": self.response.key}


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
    reasoning_budget: int | None = None,
    **values: object,
) -> StageCall:
    """Unusable answers (after re-asks) become SlotDropped; transport failures and fatal errors
    propagate (see below)."""
    template = load_prompt(prompt)
    request = LLMRequest(
        messages=template.render(**values),
        params=GenParams(
            temperature=temperature, max_tokens=max_tokens, seed=ctx.seed, reasoning_budget=reasoning_budget
        ),
        output_schema=schema,
        stage=stage,
        prompt_hash=template.hash,
        variant=variant,
        slot=slot,
    )
    counts = ctx.count(stage)
    counts.started += 1
    endpoint = ctx.endpoints[stage]
    try:
        response = await ctx.client.complete(endpoint, request)
    except StructuredOutputError as exc:
        # the model answered, and after the re-asks the answer is still unusable: a counted drop
        counts.failed += 1
        ctx.quality.record(stage, endpoint.spec, ok=False, error=str(exc))
        raise SlotDropped(stage, "llm_failure", str(exc)[:300]) from exc
    # Anything else propagates: FatalProviderError (bad key, unknown model) and ProviderOutage stop
    # the build; RetryableProviderError (transport, after retries) leaves the slot pending; it is
    # never data. ClientClosing: the build is draining.
    counts.done += 1
    ctx.quality.record(stage, endpoint.spec, ok=True)
    return StageCall(response=response, model=endpoint.spec, prompt_hash=template.hash)
