"""'auto' model resolution: paper-like writer/judge pairs per provider, one model when pinned."""

from __future__ import annotations

import pytest

from factory.llm.auto import LOCAL_SPEC, resolve_auto
from factory.recipes import load_recipe
from factory.runner.build import resolve_endpoints

ENV = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "ANTHROPIC_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "FACTORY_MODEL",
)


@pytest.fixture
def env(monkeypatch):
    for var in ENV:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_no_provider_is_the_local_model(env) -> None:
    assert resolve_auto("auto", "writer") == resolve_auto("auto", "judge") == LOCAL_SPEC


@pytest.mark.parametrize(
    ("var", "writer", "judge"),
    [
        ("OPENAI_API_KEY", "openai:gpt-4.1-mini", "openai:gpt-4o"),
        ("ANTHROPIC_API_KEY", "anthropic:claude-haiku-4-5", "anthropic:claude-sonnet-4-5"),
        ("GEMINI_API_KEY", "google:gemini-2.0-flash", "google:gemini-2.5-flash"),
    ],
)
def test_a_smaller_model_writes_and_a_larger_one_judges(env, var, writer, judge) -> None:
    env.setenv(var, "k")
    eps = resolve_endpoints(load_recipe("dynabench"), {})
    assert {s: eps[s].spec for s in ("paraphrase", "persona", "dialogue")} == dict.fromkeys(
        ("paraphrase", "persona", "dialogue"), writer
    )
    assert eps["label"].spec == eps["trace"].spec == judge


def test_pinned_model_and_overrides(env) -> None:
    env.setenv("OPENAI_API_KEY", "k")
    env.setenv("FACTORY_MODEL", "gpt-4o-mini")
    assert {ep.spec for ep in resolve_endpoints(load_recipe("dynabench"), {}).values()} == {
        "openai:gpt-4o-mini"
    }
    env.delenv("FACTORY_MODEL")
    eps = resolve_endpoints(load_recipe("dynabench"), {"label": "anthropic:claude-sonnet-4-5"})
    assert eps["trace"].spec == "anthropic:claude-sonnet-4-5"  # the trace model follows the labeller
    assert eps["dialogue"].spec == "openai:gpt-4.1-mini"


def test_a_single_model_server_serves_every_stage(env) -> None:
    from factory.testing.server_process import FakeServerProcess

    with FakeServerProcess() as server:
        env.setenv("OPENAI_BASE_URL", server.url + "/v1")
        env.setenv("OPENAI_API_KEY", "k")
        specs = {ep.spec for ep in resolve_endpoints(load_recipe("dynabench"), {}).values()}
    assert len(specs) == 1 and specs != {"openai:gpt-4.1-mini"}
