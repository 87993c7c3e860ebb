"""Near-duplicate detection for policies and dialogues: exact hashes plus 64-bit SimHash with
banded lookup (Hamming distance <= k). Deterministic: applied in slot order at commit time."""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict

WORD = re.compile(r"[a-z0-9']+")


def normalise(text: str) -> str:
    return " ".join(WORD.findall(text.lower()))


def _h64(s: str) -> int:
    return int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "big")


def _digest(norm: str) -> bytes:
    return hashlib.blake2b(norm.encode(), digest_size=16).digest()


def simhash(text: str, n: int = 3) -> int:
    words = WORD.findall(text.lower())
    grams = [" ".join(words[i:i + n]) for i in range(max(1, len(words) - n + 1))]
    acc = [0] * 64
    for g in grams:
        h = _h64(g)
        for b in range(64):
            acc[b] += 1 if (h >> b) & 1 else -1
    return sum(1 << b for b in range(64) if acc[b] > 0)


class NearDupIndex:
    """Pigeonhole banding: with distance <= k < bands, two close hashes share at least one band."""

    def __init__(self, max_distance: int = 3) -> None:
        self.k = max_distance
        self.bands = max(4, max_distance + 1)
        self.width = 64 // self.bands
        self.exact: set[bytes] = set()  # 16-byte digests, not the texts: memory stays small at scale
        self.table: dict[tuple[int, int], list[int]] = defaultdict(list)

    def _keys(self, h: int) -> list[tuple[int, int]]:
        mask = (1 << self.width) - 1
        return [(b, (h >> (b * self.width)) & mask) for b in range(self.bands)]

    def seen(self, text: str) -> str | None:
        """'exact' or 'near' if a previously added text matches, else None."""
        norm = normalise(text)
        if _digest(norm) in self.exact:
            return "exact"
        h = simhash(norm)
        for key in self._keys(h):
            for other in self.table.get(key, ()):
                if bin(h ^ other).count("1") <= self.k:
                    return "near"
        return None

    def add(self, text: str) -> None:
        norm = normalise(text)
        self.exact.add(_digest(norm))
        h = simhash(norm)
        for key in self._keys(h):
            self.table[key].append(h)
