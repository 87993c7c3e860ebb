"""Deterministic randomness: an independent RNG and stable ids per (seed, slot, purpose)."""

from __future__ import annotations

import hashlib
import random


def slot_rng(seed: int, slot: int, purpose: str) -> random.Random:
    """An independent RNG per (seed, slot, purpose): results never depend on scheduling order."""
    digest = hashlib.sha256(f"{seed}:{slot}:{purpose}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def stable_id(*parts: object, length: int = 16) -> str:
    return hashlib.sha256(":".join(str(p) for p in parts).encode()).hexdigest()[:length]
