"""Near-duplicate index used at commit time for policies and dialogues."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from factory.stages.dedup import FingerprintFile, NearDupIndex, fingerprint, simhash


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


def _variant(rng: random.Random, text: str, changes: int) -> str:
    words = text.split()
    for _ in range(changes):
        words[rng.randrange(len(words))] = f"new{rng.randrange(10**6)}"
    return " ".join(words)


def test_fingerprint_file_decides_as_the_in_memory_index(tmp_path: Path) -> None:
    """Same verdicts as NearDupIndex (exact, near, none; policy before dialogue) on texts that
    include exact copies and variants at several distances."""
    rng = random.Random(3)
    policies, dialogues = NearDupIndex(3), NearDupIndex(3)
    index = FingerprintFile(tmp_path / "x.dedup", 3)
    bases = [_text(rng, rng.choice((5, 40, 300))) for _ in range(60)]
    verdicts = {"exact": 0, "near": 0, None: 0}
    for slot in range(600):  # more than the file's first allocation would hold at 56 bytes: it grows
        p, d = rng.choice(bases), rng.choice(bases)
        p = _variant(rng, p, rng.choice((0, 0, 1, 3, 30)))
        d = _variant(rng, d, rng.choice((0, 1, 2, 50)))
        expected = None
        for field, old, text in (("policy", policies, p), ("dialogue", dialogues, d)):
            hit = old.seen(text)
            if hit:
                expected = (field, hit)
                break
        assert index.seen(fingerprint(p), fingerprint(d)) == expected
        verdicts[expected[1] if expected else None] += 1
        if expected is None:
            policies.add(p)
            dialogues.add(d)
            index.add(slot, fingerprint(p), fingerprint(d))
    assert all(verdicts.values())  # every kind of verdict was exercised


def test_fingerprint_file_grows_and_loads_only_a_matching_prefix(tmp_path: Path) -> None:
    rng = random.Random(4)
    path = tmp_path / "y.dedup"
    index = FingerprintFile(path, 3)
    texts = [(_text(rng, 50), _text(rng, 50)) for _ in range(5000)]  # past the first 4096 records
    for slot, (p, d) in enumerate(texts):
        index.add(2 * slot, fingerprint(p), fingerprint(d))
    index.close()
    again = FingerprintFile(path, 3)
    assert again.load(np.arange(0, 2 * 4000, 2))  # a crash lost the last commits: a prefix is kept
    assert again.count == 4000
    assert again.seen(fingerprint(texts[3999][0]), fingerprint("x")) == ("policy", "exact")
    assert again.seen(fingerprint(texts[4000][0]), fingerprint("x")) is None
    assert not FingerprintFile(path, 3).load(np.arange(4000))  # other slots: the caller rebuilds
