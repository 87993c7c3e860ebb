"""Text normalisation and the lexical stand-in for sentence embeddings.

`normalise_text` is the key the loader uses for exact duplicates. `lexical_vectors` is a hashed bag
of normalised words, L2-normalised, so that a plain cosine over it is a (weaker) near-duplicate
measure; the embedder falls back to it when the embedding model package is missing.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np


def normalise_text(text: str) -> str:
    """The key the loader uses for exact duplicates: lower case, punctuation runs -> one space."""
    return re.sub(r"\W+", " ", text.lower()).strip()


_LEX_DIM = 4096
_STOP = frozenset(
    "a an the and or of to in on for with by at from as is are be been it its this that "
    "these those you your their they them any all not no do does".split()
)


def lexical_vectors(texts: Sequence[str]) -> np.ndarray:
    """Hashed bag of normalised words (stop words dropped), L2-normalised: a cheap lexical cosine."""
    out = np.zeros((len(texts), _LEX_DIM), dtype=np.float32)
    for i, text in enumerate(texts):
        for word in normalise_text(text).split():
            if word in _STOP:
                continue
            h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "little")
            out[i, h % _LEX_DIM] += 1.0
    out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out


__all__ = ["lexical_vectors", "normalise_text"]
