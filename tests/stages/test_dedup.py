"""Near-duplicate index used at commit time for policies and dialogues."""

from __future__ import annotations

import random

from factory.stages.dedup import NearDupIndex, simhash


def _text(rng: random.Random, n: int) -> str:
    vocab = [f"word{i}" for i in range(2000)]
    return " ".join(rng.choice(vocab) for _ in range(n))


def test_exact_near_and_distinct() -> None:
    rng = random.Random(1)
    base = _text(rng, 300)
    index = NearDupIndex(max_distance=3)
    assert index.seen(base) is None
    index.add(base)
    assert index.seen(base.upper() + " !!") == "exact"  # case and punctuation are normalised away
    words = base.split()
    words[150] = "changed"
    assert index.seen(" ".join(words)) == "near"  # one word in 300 changed
    assert index.seen(_text(rng, 300)) is None


def test_simhash_is_stable_and_sensitive() -> None:
    rng = random.Random(2)
    a = _text(rng, 200)
    assert simhash(a) == simhash(a)
    assert bin(simhash(a) ^ simhash(_text(rng, 200))).count("1") > 10
