"""Near-duplicate detection for policies and dialogues: exact hashes plus 64-bit SimHash with
banded lookup (Hamming distance <= k). Deterministic: applied in slot order at commit time."""

from __future__ import annotations

import hashlib
import os
import re
from collections import defaultdict
from pathlib import Path

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


def fingerprint(text: str) -> tuple[bytes, int]:
    """(16-byte digest, 64-bit SimHash) of the normalised text: what the indexes compare."""
    norm = normalise(text)
    return _digest(norm), simhash(norm)


_RECORD = np.dtype(
    [
        ("slot1", "<i8"),  # slot + 1; 0 marks a record never written
        ("policy_digest", "<u8", (2,)),
        ("policy_simhash", "<u8"),
        ("dialogue_digest", "<u8", (2,)),
        ("dialogue_simhash", "<u8"),
    ]
)
_MIN_RECORDS = 4096


def _allocate(path: Path, size: int) -> None:
    """Make the file `size` bytes long with its blocks allocated: a full disk raises ENOSPC here,
    where a sparse file would kill the process with SIGBUS on the first write through the map."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if hasattr(os, "posix_fallocate"):
            os.posix_fallocate(fd, 0, size)
        else:  # pragma: no cover - macOS, Windows
            os.ftruncate(fd, max(size, os.fstat(fd).st_size))
    finally:
        os.close(fd)


class FingerprintFile:
    """The near-duplicate index of accepted samples as a file of fixed-size records (56 bytes:
    slot, and digest + SimHash of the policy and of the dialogue), memory-mapped.

    Unlike `NearDupIndex` (Python sets and dicts, several hundred bytes per sample), nothing here
    lives on the Python heap: the records are pages of a file that the kernel can write back and
    drop. A lookup scans the SimHash column with numpy (`bitwise_count` of the XOR), which finds
    exactly the texts within the Hamming distance that the banded lookup finds; an exact hit is a
    digest match among them (an identical normalised text has an identical SimHash).

    Records are appended in slot order and the file is not the source of truth: `load` keeps the
    prefix that matches the accepted slots the caller read from the store, and the caller rebuilds
    the file from the stored samples when it does not match (a file lost, copied without its
    database, or from an older version).
    """

    def __init__(self, path: Path, max_distance: int = 3) -> None:
        self.path = path
        self.k = max_distance
        self.count = 0
        if not path.exists() or path.stat().st_size < _MIN_RECORDS * _RECORD.itemsize:
            _allocate(path, _MIN_RECORDS * _RECORD.itemsize)
        self._map()

    def _map(self) -> None:
        records = self.path.stat().st_size // _RECORD.itemsize
        self._mm = np.memmap(self.path, dtype=_RECORD, mode="r+", shape=(records,))

    def _grow(self) -> None:
        size = 2 * len(self._mm) * _RECORD.itemsize
        self._mm.flush()
        del self._mm
        _allocate(self.path, size)
        self._map()

    def load(self, slots: np.ndarray) -> bool:
        """Adopt the file's first records if their slots are `slots` (the accepted samples, in
        order); False (and an empty index) when they are not."""
        n = len(slots)
        if n <= len(self._mm) and np.array_equal(self._mm["slot1"][:n], np.asarray(slots, dtype="<i8") + 1):
            self.count = n
            return True
        self.count = 0
        return False

    def seen(self, policy: tuple[bytes, int], dialogue: tuple[bytes, int]) -> tuple[str, str] | None:
        """('policy' | 'dialogue', 'exact' | 'near') for the first of the two that matches an
        indexed sample (the policy is checked first), else None."""
        n = self.count
        if n == 0:
            return None
        for field, (digest, h) in (("policy", policy), ("dialogue", dialogue)):
            close = np.flatnonzero(
                np.bitwise_count(self._mm[f"{field}_simhash"][:n] ^ np.uint64(h)) <= self.k
            )
            if len(close):
                words = np.frombuffer(digest, dtype="<u8")
                exact = (self._mm[f"{field}_digest"][close] == words).all(axis=1).any()
                return field, "exact" if exact else "near"
        return None

    def add(self, slot: int, policy: tuple[bytes, int], dialogue: tuple[bytes, int]) -> None:
        if self.count == len(self._mm):
            self._grow()
        rec = self._mm[self.count]
        rec["policy_digest"] = np.frombuffer(policy[0], dtype="<u8")
        rec["policy_simhash"] = policy[1]
        rec["dialogue_digest"] = np.frombuffer(dialogue[0], dtype="<u8")
        rec["dialogue_simhash"] = dialogue[1]
        rec["slot1"] = slot + 1
        self.count += 1

    def close(self) -> None:
        self._mm.flush()
