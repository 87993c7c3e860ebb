"""Near-duplicate pairs among rule texts: by sentence embeddings, or the lexical fallback.

Every text is encoded once (through the embedding cache), normalised, and all pairs are compared by
blocked matrix products. The scan runs a little below the threshold so the closest miss can be shown;
in the embedding mode every pair whose bulk (possibly bfloat16) similarity lies close to the threshold
is re-scored in float32, so the verdict is the float32 one. When the model package is missing the
embedder's lexical (normalised word) vectors stand in and the scan's notes say so.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
from rich.console import Console

from factory.banks.embeddings import Embedder, EmbeddingCache, embeddings_cache_path

BORDERLINE = 0.02  # bf16 similarities this close to the threshold are re-scored in float32
NEAR_MISS = 0.05  # pairs this far below the threshold are shown as "closest below"


def similar_pairs(emb: np.ndarray, threshold: float, block: int = 1024) -> list[tuple[int, int, float]]:
    """All pairs i < j with cosine >= threshold, by blocked products of the normalised rows."""
    n = emb.shape[0]
    pairs: list[tuple[int, int, float]] = []
    for start in range(0, n, block):
        stop = min(n, start + block)
        sims = emb[start:stop] @ emb[start:].T  # rows start..stop against columns start..n
        square = sims[:, : stop - start]
        square[np.tril_indices(stop - start)] = -1.0  # keep j > i only
        rows, cols = np.nonzero(sims >= threshold)
        pairs.extend(
            (start + int(r), start + int(c), float(sims[r, c])) for r, c in zip(rows, cols, strict=True)
        )
    pairs.sort(key=lambda p: -p[2])
    return pairs


def find_near_duplicates(
    texts: Sequence[str], threshold: float, console: Console, use_cache: bool
) -> tuple[list[tuple[int, int, float]], list[str]]:
    """Pairs (i, j, cosine), i < j, with cosine >= threshold - NEAR_MISS, highest first (float32
    verdicts near the threshold), and the notes on how they were found."""
    notes: list[str] = []
    embedder = Embedder(allow_fallback=True)
    if embedder.note:
        notes.append(embedder.note)
    cache = EmbeddingCache(embedder, embeddings_cache_path() if use_cache else None)
    t1 = time.perf_counter()
    todo = sum(1 for t in texts if cache.key(t) not in cache.fast)
    if todo and embedder.kind == "embedding":
        console.print(f"[dim]encoding {todo} rule(s) with {embedder.name} (cached for later runs)...[/]")
    emb = cache.get(texts)
    t_enc = time.perf_counter() - t1 - embedder.load_s
    t2 = time.perf_counter()
    # Scan a little below the threshold: the margin shows the closest miss, and in the embedding mode
    # every pair near the threshold is re-scored with float32 vectors so bulk precision never decides.
    low = max(0.0, threshold - NEAR_MISS)
    pairs = similar_pairs(emb, low)
    if embedder.kind == "embedding":
        border = [p for p in pairs if abs(p[2] - threshold) <= BORDERLINE]
        idx = sorted({i for p in border for i in p[:2]})
        if idx:
            exact = dict(zip(idx, cache.get([texts[i] for i in idx], exact=True), strict=True))
            rescored = {(i, j): float(exact[i] @ exact[j]) for i, j, _ in border}
            pairs = sorted(((i, j, rescored.get((i, j), s)) for i, j, s in pairs), key=lambda p: -p[2])
    t_pairs = time.perf_counter() - t2
    cache.save()
    if embedder.kind == "lexical":
        how = "lexical fallback"
    else:
        how = f"{embedder.name}, float32 verdict near the threshold"
        if embedder._model is not None:
            how += f", bulk in {'bfloat16' if embedder.bf16 else 'float32'}"
    notes.append(
        f"near-duplicate scan ({how}): {len(texts)} rules, {cache.hits} embeddings from the "
        f"cache; model load {embedder.load_s:.1f} s, encode {t_enc:.1f} s, "
        f"pairs {t_pairs:.2f} s"
    )
    return pairs, notes


__all__ = ["BORDERLINE", "NEAR_MISS", "find_near_duplicates", "similar_pairs"]
