"""`factory export`: DatasetDict on disk, Parquet and JSONL per split, and a dataset card.

Columns follow the published DynaBench (`policy`, `transcript`, `label` PASS/FAIL) plus structured
extras. Splits: a sample built with rule-disjoint splits (the default, `splits.method: rules` in
the recipe) carries its split in the store and is exported to it; the export measures and the card
states how many bank rule ids train and test share (0 by construction). Samples without a stored
split (`method: policy`, or stores from before splits existed) are assigned per policy by a seeded
hash of the policy id, so one policy never appears in two splits.

The export is atomic (see `factory.export.target`): it is written whole into a hidden sibling
folder and renamed onto `--out` when complete, so a killed export never leaves a folder at `--out`
that looks complete. A non-empty `--out` is refused unless `overwrite=True` (`--overwrite`).

A split may be empty (a small build, or a fraction of 0); it is still written with the full schema
to hf/, parquet/ and jsonl/, and `datasets.load_from_disk` loads it with 0 rows.

An unfinished build (last run not finished, or fewer samples than its target) still exports; the
caller is warned through `warn` and the card says so near the top.

Mixing (`mix={"safety": r}`, `factory export --mix safety=0.5`, or a recipe's `export.mix`): the
imported safety samples (table `safety_samples`, `factory safety import`) join the factory's own so
that a share r of every split comes from the safety sources (DynaGuard's SFT mix is 0.5). Safety
rows get their split from a seeded hash of (source, source_id). Per split, all of the smaller side
is kept and the larger side is subsampled (seeded) to the ratio, stratified by source and by
whether a row has a reasoning trace, so each source keeps its share of rows and of reasoning
traces. Every exported row has `source` ("dynabench" for the factory's own samples).

Test hook: the environment variable `FACTORY_EXPORT_PAUSE_S` (seconds) makes the export sleep after
writing hf/ and parquet/ into the partial folder, so that tests can kill it mid-export. It is read
nowhere else and has no effect when unset.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import orjson
import polars as pl

from factory.errors import ConfigError
from factory.export.card import dataset_card
from factory.export.target import check_target, clean_leftovers, discard, make_partial, swap_in
from factory.store.sample_row import OWN_SOURCE, export_features, export_record

SPLITS = ("train", "validation", "test")
# With a test set (`factory testset`, table testset_samples) the `test` split (and so the `DynaBench`
# config) is the test set, and the build's own test-pool samples are exported as this split.
GENERATED_TEST = "test_generated"
TESTSET_TABLE = "testset_samples"
LABEL_SOURCES = ("llm", "human", "prefer-human")
MIX_KEYS = ("safety",)
PAUSE_ENV = "FACTORY_EXPORT_PAUSE_S"


@dataclass(frozen=True)
class BuildState:
    """How far the build behind a store got: its samples against the last run's target."""

    samples: int
    target: int | None  # None: the store has no run recorded
    status: str | None  # 'running' / 'finished' / 'interrupted' of the last run

    @property
    def unfinished(self) -> bool:
        if self.target is None:
            return False
        return self.status != "finished" or self.samples < self.target

    def warning(self) -> str | None:
        if not self.unfinished:
            return None
        last = f" (last run {self.status})" if self.status != "finished" else ""
        return (
            f"the build is unfinished: {self.samples}/{self.target} samples{last}; "
            f"rerun `factory build` to finish it"
        )


def split_of(policy_id: str, seed: int, val_frac: float, test_frac: float) -> str:
    u = int.from_bytes(hashlib.sha256(f"{seed}:{policy_id}".encode()).digest()[:8], "big") / 2**64
    if u < test_frac:
        return "test"
    if u < test_frac + val_frac:
        return "validation"
    return "train"


def _connect(db: Path) -> duckdb.DuckDBPyConnection:
    try:
        return duckdb.connect(str(db), read_only=True)
    except duckdb.Error as exc:
        from factory.store.live_status import describe_live_status

        live = describe_live_status(db)
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(live or f"cannot read {db}: {detail}") from exc


def load_samples(db: Path) -> pl.DataFrame:
    con = _connect(db)
    try:
        return con.sql("SELECT * FROM samples ORDER BY slot").pl()
    finally:
        con.close()


def load_testset(db: Path) -> list[dict[str, Any]]:
    """The accepted rows of the DynaBench-style test set (`factory testset`), case by case; [] when
    the store has none."""
    con = _connect(db)
    try:
        return (
            con.sql(
                f"SELECT * FROM {TESTSET_TABLE} WHERE status = 'accepted' ORDER BY case_id, intended_label"
            )
            .pl()
            .to_dicts()
        )
    except duckdb.CatalogException:  # `factory testset` never ran on this store
        return []
    finally:
        con.close()


def build_state(db: Path, samples: int) -> BuildState:
    con = _connect(db)
    try:
        rows = con.execute("SELECT n_target, status FROM runs ORDER BY started_at DESC LIMIT 1").fetchall()
    except duckdb.CatalogException:  # a store without a runs table
        rows = []
    finally:
        con.close()
    if not rows:
        return BuildState(samples, None, None)
    target, status = rows[0]
    return BuildState(samples, None if target is None else int(target), status)


def load_safety_samples(db: Path) -> list[dict[str, Any]]:
    con = _connect(db)
    try:
        return con.sql("SELECT * FROM safety_samples ORDER BY sample_id").pl().to_dicts()
    except duckdb.CatalogException:  # nothing imported into this store
        return []
    finally:
        con.close()


def to_records(df: pl.DataFrame) -> list[dict]:
    return [export_record(r) for r in df.iter_rows(named=True)]


def human_labels(db: Path) -> dict[str, str]:
    """sample_id -> the annotators' majority PASS/FAIL over every pulled Argilla dataset
    (`human_judgements`); a tie counts as FAIL (one annotator who saw a violation sends it back)."""
    con = _connect(db)
    try:
        rows = con.execute(
            "SELECT sample_id, count(*) FILTER (WHERE label = 'FAIL'), count(*) FILTER (WHERE label = 'PASS') "
            "FROM human_judgements WHERE label IN ('PASS', 'FAIL') GROUP BY sample_id"
        ).fetchall()
    except duckdb.CatalogException:  # nothing pulled yet
        rows = []
    finally:
        con.close()
    return {sid: "FAIL" if fail >= passed else "PASS" for sid, fail, passed in rows}


def apply_labels(records: list[dict], humans: dict[str, str], labels: str) -> list[dict]:
    """Set `label` and `label_source` per row: llm keeps the LLM label; human keeps only samples
    with a human label and uses it; prefer-human uses the human label where there is one."""
    if labels not in LABEL_SOURCES:
        raise ConfigError(f"--labels {labels!r}: expected one of {', '.join(LABEL_SOURCES)}")
    out = []
    for rec in records:
        human = humans.get(rec["sample_id"])
        if labels == "human" and human is None:
            continue
        if labels != "llm" and human is not None:
            out.append({**rec, "label": human, "label_source": "human"})
        else:
            out.append({**rec, "label_source": "llm"})
    return out


def parse_mix(items: list[str] | dict[str, float] | None) -> dict[str, float]:
    """`["safety=0.5"]` (the CLI) or `{"safety": 0.5}` (a recipe) -> a checked mix."""
    if not items:
        return {}
    pairs: dict[str, Any] = {}
    if isinstance(items, dict):
        pairs = dict(items)
    else:
        for item in items:
            key, sep, value = item.partition("=")
            if not sep:
                raise ConfigError(f"--mix expects NAME=SHARE (e.g. safety=0.5), got {item!r}")
            pairs[key.strip()] = value.strip()
    mix: dict[str, float] = {}
    for key, value in pairs.items():
        if key not in MIX_KEYS:
            raise ConfigError(f"--mix: unknown part {key!r}; parts: {', '.join(MIX_KEYS)}")
        try:
            share = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"--mix {key}={value}: the share must be a number in [0, 1)") from None
        if not 0 <= share < 1:
            raise ConfigError(f"--mix {key}={value}: the share must be in [0, 1)")
        mix[key] = share
    return mix


def _unit(seed: int, key: str) -> float:
    return int.from_bytes(hashlib.sha256(f"{seed}:mix:{key}".encode()).digest()[:8], "big") / 2**64


def _stratified(recs: list[dict], k: int, seed: int) -> list[dict]:
    """k of `recs`, drawn by a seeded hash, in proportion to each (source, has reasoning) stratum
    (largest remainder), keeping the input order."""
    if k >= len(recs):
        return list(recs)
    strata: dict[tuple[str, bool], list[int]] = {}
    for i, rec in enumerate(recs):
        strata.setdefault((rec["source"], bool(rec["reasoning"])), []).append(i)
    quota = {key: k * len(idx) / len(recs) for key, idx in strata.items()}
    counts = {key: int(q) for key, q in quota.items()}
    rest = k - sum(counts.values())
    for key in sorted(quota, key=lambda key: (-(quota[key] - counts[key]), key))[:rest]:
        counts[key] += 1
    chosen: set[int] = set()
    for key, idx in strata.items():
        ranked = sorted(idx, key=lambda i: (_unit(seed, recs[i]["sample_id"]), i))
        chosen.update(ranked[: counts[key]])
    return [rec for i, rec in enumerate(recs) if i in chosen]


def mix_split(ours: list[dict], safety: list[dict], share: float, seed: int) -> list[dict]:
    """One split with `share` of its rows from `safety`: the larger side is subsampled, and the rows
    are put in a seeded order, so that the first N rows (what `--limit` / GRPO's `limit` take) are a
    sample of the mixture too."""
    if share <= 0 or not safety:
        return list(ours)
    want = round(len(ours) * share / (1 - share))
    if want <= len(safety):
        rows = list(ours) + _stratified(safety, want, seed)
    else:
        keep = round(len(safety) * (1 - share) / share)
        rows = _stratified(ours, keep, seed) + list(safety)
    return sorted(rows, key=lambda rec: (_unit(seed, "order:" + rec["sample_id"]), rec["sample_id"]))


def export(
    db: Path,
    out: Path,
    *,
    seed: int = 0,
    val_frac: float = 0.05,
    test_frac: float = 0.05,
    overwrite: bool = False,
    warn: Callable[[str], None] | None = None,
    labels: str = "llm",
    mix: dict[str, float] | None = None,
) -> str:
    """Export the store's samples to `out`; returns a one-line summary.

    Raises `ConfigError` (one line, naming the path or flag) for bad fractions, an empty store, a
    mix with no safety samples to mix in, or a target that is a file, not writable, or a non-empty
    folder without `overwrite`.
    """
    if not (0 <= val_frac < 1 and 0 <= test_frac < 1 and val_frac + test_frac < 1):
        raise ConfigError("--val-frac and --test-frac must be in [0, 1) and sum to less than 1")
    share = parse_mix(mix).get("safety", 0.0)
    clean_leftovers(Path(os.path.realpath(out)))
    real = check_target(out, overwrite=overwrite, db=db)
    df = load_samples(db)
    testset_rows = load_testset(db)
    if df.height == 0 and not testset_rows:
        raise ConfigError(f"{db} holds no samples; run `factory build` first")
    state = build_state(db, df.height)
    notice = state.warning()
    if notice and warn is not None:
        warn(notice)
    humans = human_labels(db) if labels != "llm" else {}
    by_split: dict[str, list[dict]] = {s: [] for s in SPLITS}
    stored = kept = 0
    for row in df.iter_rows(named=True):
        labelled = apply_labels([export_record(row)], humans, labels)
        if not labelled:  # --labels human: a sample without a human judgement
            continue
        rec = labelled[0]
        kept += 1
        split = row.get("split") or ""
        stored += bool(split)
        by_split[split or split_of(rec["policy_id"], seed, val_frac, test_frac)].append(rec)
    if testset_rows:
        by_split[GENERATED_TEST] = by_split["test"]
        by_split["test"] = apply_labels([export_record(r) for r in testset_rows], {}, "llm")
    if not kept and not testset_rows:
        raise ConfigError(
            f"{db} has no human judgements: `--labels human` exports nothing (run `factory annotate pull`)"
        )
    method = "rules" if stored == kept else "policy" if stored == 0 else "mixed"
    if share > 0:
        safety_rows = load_safety_samples(db)
        if not safety_rows:
            raise ConfigError(
                f"--mix safety={share:g}: {db} holds no safety samples; run `factory safety import` first"
            )
        safety_by_split: dict[str, list[dict]] = {s: [] for s in SPLITS}
        for row in safety_rows:
            key = f"safety:{row['source']}:{row['source_id']}"
            rec = {**export_record(row), "label_source": "source"}  # the imported dataset's own label
            safety_by_split[split_of(key, seed, val_frac, test_frac)].append(rec)
        by_split = {
            s: mix_split(rows, safety_by_split.get(s, []), share, seed) for s, rows in by_split.items()
        }
    # measured on the factory's own samples: imported safety rows carry no bank rule ids
    own = {s: [r for r in rows if r["source"] == OWN_SOURCE] for s, rows in by_split.items()}
    split_info = SplitInfo(method=method, overlap=rule_overlap(own), testset=len(testset_rows))

    tmp = make_partial(real, out)
    try:
        dd = _write(db, tmp, by_split, state, split_info)
        swap_in(tmp, real, out, overwrite=overwrite)
    except OSError as exc:
        discard(tmp)
        where = exc.filename or out
        raise ConfigError(f"export to {out} failed: {exc.strerror or exc} ({where})") from exc
    except BaseException:
        discard(tmp)
        raise
    sizes = ", ".join(f"{s}={len(dd[s])}" for s in by_split)
    if testset_rows:
        sizes += f" (test = the test set of testset_samples; the build's test split is {GENERATED_TEST})"
    sizes += (
        f"; split by {split_info.method}, train/test share {split_info.overlap['train/test']} bank rule(s)"
    )
    tail = f"; unfinished build ({state.samples}/{state.target})" if notice else ""
    total = sum(len(rows) for rows in by_split.values())
    if share > 0:
        imported = sum(1 for rows in by_split.values() for r in rows if r["source"] != OWN_SOURCE)
        tail += f"; mix: {imported} safety samples ({imported / max(total, 1):.0%})"
    if labels != "llm":
        human = sum(1 for rows in by_split.values() for r in rows if r.get("label_source") == "human")
        tail += f"; labels {labels}: {human} human"
    return f"{total} samples to {out} ({sizes}){tail}"


@dataclass(frozen=True)
class SplitInfo:
    """How the splits were made and the measured bank-rule overlap between them."""

    method: str  # rules | policy | mixed (some samples with a stored split, some hashed)
    overlap: dict[str, int]  # "train/test" -> number of bank rule ids both splits use
    testset: int = 0  # rows of the `factory testset` test set exported as `test` (0: none)


def rule_overlap(by_split: dict[str, list[dict]]) -> dict[str, int]:
    """Distinct bank rule ids shared by each pair of splits, measured on the exported records."""
    ids = {s: {r for rec in recs for r in rec.get("rule_ids") or []} for s, recs in by_split.items()}
    pairs = [("train", "test"), ("train", "validation"), ("validation", "test")]
    if GENERATED_TEST in ids:
        pairs.append(("train", GENERATED_TEST))
    return {f"{a}/{b}": len(ids[a] & ids[b]) for a, b in pairs}


def _write(
    db: Path, tmp: Path, by_split: dict[str, list[dict]], state: BuildState, split_info: SplitInfo
) -> Any:
    import datasets

    features = _features()
    # An empty split (small builds) still gets the full schema: from_list([]) would lose it.
    dd = datasets.DatasetDict(
        {
            s: datasets.Dataset.from_list(rows, features=features)
            if rows
            else datasets.Dataset.from_dict({k: [] for k in features}, features=features)
            for s, rows in by_split.items()
        }
    )
    # save_to_disk picks min(rows, ...) shards, i.e. none for an empty split: no arrow file, and
    # load_from_disk then fails on every split. One (empty) shard keeps the split loadable.
    dd.save_to_disk(str(tmp / "hf"), num_shards={s: 1 for s, ds in dd.items() if len(ds) == 0})
    (tmp / "parquet").mkdir()
    for s, ds in dd.items():
        ds.to_parquet(str(tmp / "parquet" / f"{s}.parquet"))
    _test_pause()
    (tmp / "jsonl").mkdir()
    for s in dd:
        with open(tmp / "jsonl" / f"{s}.jsonl", "wb") as fh:
            for rec in by_split[s]:
                fh.write(orjson.dumps(rec) + b"\n")
    from factory.stats.report import stats_report

    stats_text = stats_report(db, tmp / "stats")
    unfinished = (state.samples, state.target, state.status) if state.unfinished else None
    sources = source_summary(by_split)
    card = dataset_card(dd, stats_text, unfinished=unfinished, sources=sources, split_info=split_info)
    (tmp / "README.md").write_text(card, encoding="utf-8")
    return dd


def source_summary(by_split: dict[str, list[dict]]) -> dict[str, dict[str, int]]:
    """Per source: rows per split and rows with a reasoning trace (for the card)."""
    out: dict[str, dict[str, int]] = {}
    for split, rows in by_split.items():
        for rec in rows:
            entry = out.setdefault(rec["source"], dict.fromkeys((*SPLITS, "reasoning"), 0))
            entry[split] = entry.get(split, 0) + 1
            entry["reasoning"] += bool(rec["reasoning"])
    return out


def _test_pause() -> None:
    """The test hook documented above: sleep mid-export when FACTORY_EXPORT_PAUSE_S is set."""
    value = os.environ.get(PAUSE_ENV)
    if not value:
        return
    try:
        seconds = float(value)
    except ValueError:
        raise ConfigError(f"{PAUSE_ENV} must be a number of seconds, got {value!r}") from None
    time.sleep(max(0.0, seconds))


def _feature(desc: Any) -> Any:
    from datasets import List, Value

    if isinstance(desc, str):
        return Value(desc)
    if isinstance(desc, list):
        return List(_feature(desc[0]))
    return {k: _feature(v) for k, v in desc.items()}


def _features():  # noqa: ANN202
    from datasets import Features

    return Features(
        {name: _feature(desc) for name, desc in {**export_features(), "label_source": "string"}.items()}
    )
