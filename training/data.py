"""Reading the export produced by ``factory export``.

An export directory ``OUT`` holds ``OUT/hf/`` (a ``datasets.DatasetDict`` saved with
``save_to_disk``) and/or ``OUT/parquet/{split}.parquet``. We read ``hf/`` when present, else the
parquet files. Extra columns are carried along untouched; only ``policy`` (or ``rules``),
``transcript`` (or ``turns``) and ``label`` are required.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.format import normalize_label

if TYPE_CHECKING:  # pragma: no cover
    from datasets import Dataset

REQUIRED_ANY = (("policy", "rules"), ("transcript", "turns"), ("label",))


class ExportError(ValueError):
    """The export directory is missing, malformed, or lacks the requested split/columns."""


def _available_splits(root: Path) -> tuple[str, list[str]]:
    hf = root / "hf"
    if (hf / "dataset_dict.json").is_file():
        import json

        splits = json.loads((hf / "dataset_dict.json").read_text()).get("splits", [])
        return "hf", list(splits)
    if (root / "dataset_dict.json").is_file():  # pointed straight at the hf/ folder
        import json

        splits = json.loads((root / "dataset_dict.json").read_text()).get("splits", [])
        return "hf-root", list(splits)
    parquet = root / "parquet"
    if parquet.is_dir():
        return "parquet", sorted(p.stem for p in parquet.glob("*.parquet"))
    return "none", []


def describe_export(path: str | Path) -> dict[str, Any]:
    """Which layout and splits an export directory has (raises ExportError when unusable)."""
    root = Path(path)
    if not root.exists():
        raise ExportError(f"export directory {root} does not exist (run `factory export` first)")
    if not root.is_dir():
        raise ExportError(f"export path {root} is not a directory")
    layout, splits = _available_splits(root)
    if layout == "none":
        raise ExportError(
            f"{root} is not a factory export: expected {root / 'hf'} (a saved DatasetDict) "
            f"or {root / 'parquet'}/<split>.parquet"
        )
    if not splits:
        raise ExportError(f"{root} ({layout} layout) contains no splits")
    return {"root": str(root), "layout": layout, "splits": splits}


def load_split(path: str | Path, split: str = "train", limit: int | None = None) -> Dataset:
    """Load one split of an export as a ``datasets.Dataset``, validated and with labels normalised.

    ``limit`` keeps the first N rows (after validation).
    """
    info = describe_export(path)
    root = Path(info["root"])
    if split not in info["splits"]:
        raise ExportError(
            f"split {split!r} not found in {root}; available splits: {', '.join(info['splits'])}"
        )
    try:
        if info["layout"] in ("hf", "hf-root"):
            from datasets import load_from_disk

            ds = load_from_disk(str(root / "hf" if info["layout"] == "hf" else root))[split]
        else:
            from datasets import Dataset

            ds = Dataset.from_parquet(str(root / "parquet" / f"{split}.parquet"))
    except ExportError:
        raise
    except Exception as exc:  # corrupt files, version mismatch, ...
        raise ExportError(f"could not read split {split!r} of {root}: {type(exc).__name__}: {exc}") from exc
    validate_columns(ds.column_names, where=f"{root} [{split}]")
    ds = _normalise(ds, where=f"{root} [{split}]")
    if limit is not None and limit >= 0:
        ds = ds.select(range(min(limit, len(ds))))
    return ds


def validate_columns(columns: list[str], where: str = "dataset") -> None:
    missing = [" or ".join(alts) for alts in REQUIRED_ANY if not any(a in columns for a in alts)]
    if missing:
        raise ExportError(
            f"{where} lacks required column(s): {', '.join(missing)}; has: {', '.join(columns)}"
        )


def _normalise(ds: Dataset, where: str) -> Dataset:
    labels = ds["label"]
    bad = [i for i, v in enumerate(labels) if normalize_label(v) is None]
    if bad:
        examples = ", ".join(repr(labels[i]) for i in bad[:3])
        raise ExportError(f"{where}: {len(bad)} row(s) have a label that is not PASS/FAIL (e.g. {examples})")
    if any(v != normalize_label(v) for v in labels):
        ds = ds.map(lambda row: {"label": normalize_label(row["label"])})
    if "sample_id" not in ds.column_names:
        ds = ds.add_column("sample_id", [f"row-{i}" for i in range(len(ds))])
    return ds
