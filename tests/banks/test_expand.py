"""`factory banks expand`: screening of candidates, and a run against the fake OpenAI-compatible server."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest
from rich.console import Console

from factory.banks.embeddings import Embedder
from factory.banks.expand import Screen, clean_rule, expand
from factory.banks.lexical import normalise_text
from factory.banks.loader import RuleLine, load_banks
from factory.testing.server_process import FakeServerProcess
from tests.banks.conftest import snapshot

NEW_RULE = "Offer a teeth-brushing add-on only to dogs over one year old, at 8 USD per session."


@pytest.fixture(scope="module")
def server() -> Iterator[FakeServerProcess]:
    with FakeServerProcess() as srv:
        yield srv


@pytest.fixture
def llm_env(server: FakeServerProcess, bank: Path, monkeypatch: pytest.MonkeyPatch) -> FakeServerProcess:
    monkeypatch.setenv("OPENAI_BASE_URL", server.url + "/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    monkeypatch.setenv("FACTORY_BANKS", str(bank))
    monkeypatch.delenv("FACTORY_MODEL", raising=False)
    for var in ("ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    return server


def _quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def test_clean_rule() -> None:
    assert clean_rule("  2. never  quote a price\nwithout tax") == "Never quote a price without tax."
    assert clean_rule('"Say hello."') == "Say hello."
    assert clean_rule("- Ask for the order number first!") == "Ask for the order number first!"


def test_screen_rejects_duplicates_by_reason(bank: Path) -> None:
    banks, _ = load_banks(bank)
    rules = banks.all_rules
    embedder = Embedder()
    screen = Screen(rules, embedder, embedder.encode([r.text for r in rules]), threshold=0.9)
    verdicts = screen.screen(
        [
            "all dogs must have current RABIES vaccination records on file, before their appointment",  # exact (bank)
            "Late arrivals of more than 15 minutes may need to be rescheduled; mention this in every booking "
            "confirmation.",  # near (bank)
            NEW_RULE,  # new
            NEW_RULE.upper(),  # exact (candidate)
            "Only offer the teeth-brushing add-on to dogs older than one year, at 8 USD per session.",  # near (cand.)
            "Too short.",  # schema
        ]
    )
    reasons = [v.reason for v in verdicts]
    assert reasons == [
        "exact duplicate of a bank rule",
        "near duplicate of a bank rule",
        "",
        "exact duplicate of a candidate rule",
        "near duplicate of a candidate rule",
        "schema: rule length outside 30..400 characters",
    ]
    assert verdicts[1].nearest is not None and verdicts[1].nearest.group == "pet-grooming"
    assert verdicts[1].similarity >= 0.9
    assert screen.accepted == [NEW_RULE]
    # later batches are screened against the candidates accepted earlier
    assert screen.screen([NEW_RULE])[0].reason == "exact duplicate of a candidate rule"


async def test_expand_against_fake_server(llm_env: FakeServerProcess, bank: Path, tmp_path: Path) -> None:
    before = snapshot(bank)
    path = await expand(
        industry="Pet Grooming", target=6, model="auto", out=None, threshold=0.9, seed=3, console=_quiet()
    )
    assert path == tmp_path / "outputs" / "candidates" / "pet-grooming.jsonl"
    rows = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert len(rows) == 6
    bank_rules = load_banks(bank)[0].all_rules
    bank_keys = {normalise_text(r.text) for r in bank_rules}
    keys = [normalise_text(r["text"]) for r in rows]
    assert len(set(keys)) == 6 and not set(keys) & bank_keys
    for row in rows:
        assert set(row) >= {"text", "industry", "model", "nearest_existing", "similarity"}
        assert row["industry"] == "pet-grooming" and row["model"].startswith("openai:")
        assert RuleLine(text=row["text"])
        assert row["nearest_existing"] in {r.text for r in bank_rules} and row["similarity"] < 0.9
    emb = Embedder().encode([r["text"] for r in rows])
    sims = emb @ emb.T
    assert (sims[np.triu_indices(6, 1)] < 0.9).all()
    assert snapshot(bank) == before  # the bank is never written

    # same seed, same fake answers: the same candidates; a category works the same way
    again = await expand(
        industry="pet-grooming", target=6, out=tmp_path / "again.jsonl", seed=3, console=_quiet()
    )
    assert again.read_bytes() == path.read_bytes()
    cat = await expand(category="returns", target=3, seed=0, console=_quiet())
    rows = [orjson.loads(line) for line in cat.read_bytes().splitlines()]
    assert len(rows) == 3 and all(r["category"] == "returns" for r in rows)
    assert snapshot(bank) == before


async def test_expand_refuses_to_write_into_the_bank(llm_env: FakeServerProcess, bank: Path) -> None:
    from factory.llm.errors import ConfigError

    with pytest.raises(ConfigError, match="must not be written inside the banks folder"):
        await expand(
            industry="Pet Grooming",
            target=2,
            out=bank / "rules" / "industry" / "pet-grooming.txt",
            console=_quiet(),
        )
    with pytest.raises(ConfigError, match="unknown industry"):
        await expand(industry="Pet Groming", target=2, console=_quiet())


async def test_expand_without_the_embedding_model(
    llm_env: FakeServerProcess, bank: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from factory.banks import embeddings as embeddings_mod

    monkeypatch.setattr(embeddings_mod, "_model_version", lambda: None)
    buf = io.StringIO()
    path = await expand(category="tone", target=2, console=Console(file=buf, width=200))
    assert len(path.read_bytes().splitlines()) == 2
    out = buf.getvalue()
    assert "not installed" in out and "normalised-word cosine" in out
