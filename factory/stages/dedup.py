"""Near-duplicate detection for policies and dialogues: exact hashes plus 64-bit SimHash with
banded lookup (Hamming distance <= k). Deterministic: applied in slot order at commit time."""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict

import numpy as np

WORD = re.compile(r"[a-z0-9']+")


def normalise(text: str) -> str:
    return " ".join(WORD.findall(text.lower()))


def _h64(s: str) -> int:
    return int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "big")


def _digest(norm: str) -> bytes:
    return hashlib.blake2b(norm.encode(), digest_size=16).digest()


_BITS = np.arange(64, dtype=np.uint64)


def simhash(text: str, n: int = 3) -> int:
    """64-bit SimHash over word n-grams (vectorised: one row of bits per n-gram)."""
    words = WORD.findall(text.lower())
    grams = [" ".join(words[i : i + n]) for i in range(max(1, len(words) - n + 1))]
    hashes = np.fromiter((_h64(g) for g in grams), dtype=np.uint64, count=len(grams))
    ones = ((hashes[:, None] >> _BITS) & np.uint64(1)).sum(axis=0)
    positive = ones * 2 > len(grams)  # more n-grams set the bit than clear it
    return int((positive.astype(np.uint64) << _BITS).sum())


class NearDupIndex:
    """Pigeonhole banding: with distance <= k < bands, two close hashes share at least one band."""

    def __init__(self, max_distance: int = 3) -> None:
        self.k = max_distance
        self.bands = max(4, max_distance + 1)
        self.width = 64 // self.bands
        self.exact: set[bytes] = set()  # 16-byte digests, not the texts: memory stays small at scale
        self.table: dict[tuple[int, int], list[int]] = defaultdict(list)
        self._last: tuple[str, tuple[bytes, int]] | None = None

    def _keys(self, h: int) -> list[tuple[int, int]]:
        mask = (1 << self.width) - 1
        return [(b, (h >> (b * self.width)) & mask) for b in range(self.bands)]

    def _fingerprint(self, text: str) -> tuple[bytes, int]:
        """(digest, simhash) of the normalised text; the last one is kept, since the committer
        asks `seen(text)` and then `add(text)` for the same text."""
        if self._last is not None and self._last[0] is text:
            return self._last[1]
        norm = normalise(text)
        fp = (_digest(norm), simhash(norm))
        self._last = (text, fp)
        return fp

    def seen(self, text: str) -> str | None:
        """'exact' or 'near' if a previously added text matches, else None."""
        digest, h = self._fingerprint(text)
        if digest in self.exact:
            return "exact"
        for key in self._keys(h):
            for other in self.table.get(key, ()):
                if bin(h ^ other).count("1") <= self.k:
                    return "near"
        return None

    def add(self, text: str) -> None:
        digest, h = self._fingerprint(text)
        self.exact.add(digest)
        for key in self._keys(h):
            self.table[key].append(h)
