"""Request/response models shared by every provider of the LLM layer."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["system", "user", "assistant"]


class Message(BaseModel):
    model_config = ConfigDict(frozen=True)
    role: Role
    content: str


class GenParams(BaseModel):
    """Generation parameters; every field takes part in the cache fingerprint."""

    model_config = ConfigDict(frozen=True)
    temperature: float = 0.7
    max_tokens: int = 1024
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] | None = None
    # Ask the model for its own reasoning (OpenAI-compatible `reasoning_content`, Anthropic extended
    # thinking, Gemini thoughts) with about this many tokens; None: do not ask.
    reasoning_budget: int | None = None


class LLMRequest(BaseModel):
    """One call: messages in, optionally a pydantic model the answer must validate against."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    messages: list[Message]
    params: GenParams = Field(default_factory=GenParams)
    output_schema: type[BaseModel] | None = None
    # Bookkeeping only (not part of the fingerprint): which stage and prompt template made the call.
    stage: str = "adhoc"
    prompt_hash: str = ""
    slot: int | None = None  # the build slot the call serves, for llm_failures
    # A free-form tag that *is* part of the fingerprint, used to ask for a distinct sample of
    # an otherwise identical request (e.g. k samples per input for hard-sample mining).
    variant: str = ""


class Usage(BaseModel):
    input_tokens: int = 0  # every prompt token, the cached ones included
    output_tokens: int = 0
    # prompt tokens the provider read from its prompt cache (a shared prefix), billed at its cached rate
    cached_input_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class RawCompletion(BaseModel):
    """What a provider returns for one HTTP exchange, before validation."""

    text: str
    finish_reason: str = "stop"
    usage: Usage = Field(default_factory=Usage)
    model: str = ""
    response_id: str = ""
    reasoning: str = ""  # the model's own reasoning, when the provider returns it
    batch_job: str = ""  # the provider batch job that answered it ("" online or from the cache)


class LLMResponse(BaseModel):
    """The validated outcome of a request (after any re-asks)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    text: str
    parsed: Any = None
    provider: str
    model: str
    usage: Usage
    cost_usd: float
    latency_s: float
    finish_reason: str
    cached: bool
    attempts: int = 1
    key: str = ""
    reasoning: str = ""  # the model's own reasoning (RawCompletion.reasoning of the accepted answer)

    def data(self) -> dict[str, Any]:
        """The parsed structured output as a plain dict."""
        if self.parsed is None:
            raise ValueError("response has no structured output")
        return self.parsed.model_dump(mode="json")
