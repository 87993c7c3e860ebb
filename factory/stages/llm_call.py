"""The one way a stage calls an LLM: render its prompt, call, count, and turn failures into drops.

The result carries the call's provenance (model, prompt hash, cache key), which every stage table
stores next to its rows. Failures reach `llm_failures` through the client's failure sink.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from factory.llm.errors import FatalProviderError, LLMError
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
    **values: object,
) -> StageCall:
    """Provider/validation failures become SlotDropped; fatal configuration errors (bad key,
    unknown model) propagate and stop the build."""
    template = load_prompt(prompt)
    request = LLMRequest(
        messages=template.render(**values),
        params=GenParams(temperature=temperature, max_tokens=max_tokens, seed=ctx.seed),
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
    except FatalProviderError:
        raise  # bad key, unknown model...: stop the build, the message says what to fix
    except LLMError as exc:
        counts.failed += 1
        raise SlotDropped(stage, "llm_failure", str(exc)[:300]) from exc
    counts.done += 1
    return StageCall(response=response, model=endpoint.spec, prompt_hash=template.hash)
