"""The `factory` command line.

Bad input (a malformed bank, recipe, flag or file) ends in one line, `error: <message>` naming the
file, row or flag, and exit code 2; a build stopped for another reason (`BuildStopped`) exits with
its own code; anything unexpected is one line `error: internal error: ...` and exit code 1 (set
FACTORY_DEBUG=1 for the traceback). Warnings from the library (e.g. a skipped journal line) are
printed as `warning: <message>` lines.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from factory import event_loop
from factory.banks.loader import BankError
from factory.errors import BuildStopped
from factory.llm.config import EndpointConfig
from factory.llm.errors import ConfigError, FatalProviderError
from factory.paths import outputs_dir
from factory.recipes import STAGES, load_recipe
from factory.store.db import StoreError

# The errors that are the user's to fix: one line, exit code 2.
INPUT_ERRORS = (ConfigError, BankError, StoreError, FatalProviderError)
MAX_SEED = 1 << 63  # seeds are stored as DuckDB BIGINT


def _debug() -> bool:
    return os.environ.get("FACTORY_DEBUG", "") not in ("", "0")


class _LevelPrefix(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {' '.join(record.getMessage().split())}"


def _setup_logging() -> None:
    """Library warnings (the `factory` loggers) as one `warning: ...` line each on stderr."""
    logger = logging.getLogger("factory")
    if not any(getattr(h, "_factory_cli", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_LevelPrefix())
        handler._factory_cli = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG if _debug() else logging.WARNING)
        logger.propagate = False


class _FactoryApp(typer.Typer):
    """The typer app with the last-resort handler: no traceback unless FACTORY_DEBUG is set."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        _setup_logging()
        try:
            return super().__call__(*args, **kwargs)
        except INPUT_ERRORS as exc:  # raised outside a guarded call: still the user's to fix
            if _debug():
                raise
            _print_error(str(exc))
            sys.exit(2)
        except BuildStopped as exc:
            if _debug():
                raise
            _print_error(str(exc))
            sys.exit(exc.exit_code)
        except Exception as exc:
            if _debug():
                raise
            detail = " ".join(str(exc).split())
            _print_error(
                f"internal error: {type(exc).__name__}: {detail} (set FACTORY_DEBUG=1 for the traceback)"
            )
            sys.exit(1)


app = _FactoryApp(
    add_completion=False, no_args_is_help=True, help="DynaBench factory: data for dynamic guardian models."
)
console = Console(stderr=True)

DEFAULT_DB = "outputs/factory.duckdb"
DbOpt = Annotated[Path, typer.Option("--db", help="DuckDB file of the build")]


def _db(path: Path) -> Path:
    if str(path) == DEFAULT_DB:
        return outputs_dir() / "factory.duckdb"
    return path


def _print_error(message: str) -> None:
    # soft_wrap: never fold a long message over several lines, whatever the terminal width
    console.print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False, soft_wrap=True)


def _fail(message: str, code: int = 2) -> None:
    _print_error(message)
    raise typer.Exit(code)


def _run_guarded(fn, *args, **kwargs):  # noqa: ANN001, ANN202
    try:
        return fn(*args, **kwargs)
    except INPUT_ERRORS as exc:
        _fail(str(exc))
    except BuildStopped as exc:
        _fail(str(exc), code=exc.exit_code)


def _check_seed(seed: int, flag: str = "--seed") -> None:
    if not 0 <= seed < MAX_SEED:
        _fail(f"{flag} {seed}: must be between 0 and 2**63 - 1 (seeds are stored as 64-bit integers)")


def _check_spec(flag: str, spec: str) -> None:
    if not spec.strip():
        _fail(f"{flag}: empty model spec; expected provider:model (e.g. openai:gpt-4o-mini) or auto")
    if spec == "auto":
        return
    try:
        EndpointConfig.parse(spec)
    except ConfigError as exc:
        _fail(f"{flag}: {exc}")


def _parse_model_overrides(model: str | None, model_for: list[str]) -> dict[str, str]:
    overrides: dict[str, str] = {}
    if model is not None:
        _check_spec(f"--model {model!r}", model)
        overrides["default"] = model
    for item in model_for:
        if "=" not in item:
            _fail(f"--model-for expects STAGE=provider:model, got {item!r}")
        stage, spec = item.split("=", 1)
        if stage not in STAGES:
            _fail(f"--model-for: unknown stage {stage!r}; stages: {', '.join(STAGES)}")
        _check_spec(f"--model-for {item!r}", spec)
        overrides[stage] = spec
    return overrides


@app.command()
def build(
    n: Annotated[int, typer.Option("--n", help="samples wanted in the final dataset, after filtering")],
    seed: Annotated[int, typer.Option(help="random seed; same seed + same model outputs = same dataset")] = 0,
    pipeline: Annotated[str, typer.Option(help="recipe name in pipelines/ or a YAML path")] = "dynabench",
    model: Annotated[
        str | None, typer.Option(help="provider:model for every stage, e.g. openai:gpt-4o-mini")
    ] = None,
    model_for: Annotated[list[str], typer.Option(help="STAGE=provider:model, repeatable")] = [],  # noqa: B006
    db: DbOpt = Path(DEFAULT_DB),
    progress: Annotated[bool, typer.Option(help="live progress display")] = True,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="print the expected calls, tokens and cost; make no call")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="with --dry-run: one JSON object on stdout")
    ] = False,
    pilot: Annotated[
        int, typer.Option(help="with --dry-run: measure rates on a real build of this many samples first")
    ] = 0,
    max_cost: Annotated[
        float | None,
        typer.Option("--max-cost", help="USD budget: stop (exit 5) before spent + in-flight cost passes it"),
    ] = None,
    mode: Annotated[
        str | None,
        typer.Option(
            help="online, or batch: every LLM stage sends its requests as provider batch jobs (half price, "
            "answered within hours; a rerun collects submitted jobs by id). Default: the recipe's batch.mode"
        ),
    ] = None,
    executor: Annotated[
        str, typer.Option(help="where slots run: local (this process) or ray (worker actors; same dataset)")
    ] = "local",
    workers: Annotated[int, typer.Option(help="with --executor ray: number of worker actors")] = 2,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address", help="with --executor ray: the cluster (default: a local Ray instance)"
        ),
    ] = None,
) -> None:
    """Generate N samples into the DuckDB store (resumable: rerun the same command after a crash)."""
    from factory.llm.providers.local_provider import NOT_TRAINING_QUALITY
    from factory.runner.build import Terminated, check_executor, resolve_endpoints
    from factory.runner.build import build as run_build
    from factory.runner.gc_tuning import gc_thresholds

    if not 1 <= n < MAX_SEED:
        _fail(f"--n {n}: must be at least 1 (and below 2**63)")
    _check_seed(seed)
    if max_cost is not None and not max_cost > 0:
        _fail(f"--max-cost {max_cost}: must be a positive number of dollars")
    if pilot < 0:
        _fail(f"--pilot {pilot}: must be 0 (no pilot) or a number of samples")
    if (as_json or pilot) and not dry_run:
        _fail("--json and --pilot go with --dry-run")
    if mode not in (None, "online", "batch"):
        _fail(f"--mode {mode!r}: use online or batch")
    if executor not in ("local", "ray"):
        _fail(f"--executor {executor!r}: expected local or ray")
    if workers < 1:
        _fail(f"--workers {workers}: must be at least 1")
    if executor == "ray" and not dry_run:
        from factory.runner.ray_executor import require_ray

        _run_guarded(require_ray)
    overrides = _parse_model_overrides(model, model_for)
    _run_guarded(gc_thresholds)
    recipe = _run_guarded(load_recipe, pipeline).with_mode(mode)
    endpoints = _run_guarded(resolve_endpoints, recipe, overrides)
    _run_guarded(check_executor, executor, endpoints)
    if dry_run:
        _dry_run(_db(db), recipe, endpoints, overrides, n, seed, pilot, as_json)
        return
    specs = {stage: ep.spec for stage, ep in endpoints.items()}
    console.print(f"pipeline {recipe.name}, seed {seed}, db {_db(db)}")
    console.print("models: " + ", ".join(f"{k}={v}" for k, v in specs.items()))
    batched = [stage for stage, ep in endpoints.items() if ep.batch is not None]
    if batched:
        console.print(
            f"batch mode for {', '.join(batched)}: requests go out as provider batch jobs (half price); "
            f"a job may take up to 24 h, and a rerun collects submitted jobs by id"
        )
    if any(ep.provider == "local" for ep in endpoints.values()):
        console.print(f"[bold yellow]WARNING:[/] {NOT_TRAINING_QUALITY}")
    try:
        summary = event_loop.run(
            run_build(
                _db(db),
                recipe,
                n,
                seed,
                overrides,
                progress=progress,
                max_cost=max_cost,
                executor=executor,
                workers=workers,
                ray_address=ray_address,
            )
        )
    except INPUT_ERRORS as exc:
        _fail(str(exc))
    except Terminated as exc:
        console.print(str(exc), markup=False, highlight=False)
        raise typer.Exit(exc.exit_code) from None
    except BuildStopped as exc:
        _fail(str(exc), code=exc.exit_code)
    except KeyboardInterrupt:
        console.print(
            "interrupted: every answer received was journaled; rerun the same command to resume "
            "(it pays only for requests that had no answer yet)"
        )
        raise typer.Exit(130) from None
    if summary.already_done:
        console.print(
            f"nothing to do: {summary.db} already holds {summary.accepted} samples (--n {n}); "
            f"`factory export` exports all {summary.accepted}. Use a larger --n to extend the build."
        )
        return
    dropped = ", ".join(f"{k}={v}" for k, v in sorted(summary.dropped.items())) or "none"
    console.print(
        f"done: {summary.accepted} samples from {summary.slots} slots in {summary.wall_s:.1f}s; "
        f"dropped: {dropped}"
    )
    console.print(
        f"LLM: {summary.network_calls} calls paid, {summary.cache_hits} answered from cache, "
        f"${summary.cost_usd:.4f} spent this run"
    )
    if any(ep.provider == "local" for ep in endpoints.values()):
        console.print(f"[bold yellow]REMINDER:[/] {NOT_TRAINING_QUALITY}")


@app.command()
def testset(
    grid: Annotated[
        Path | None, typer.Option(help="grid YAML (default: testsets/dynabench_grid.yaml)")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="seed; default: the build's seed in --db, else 0")] = None,
    pipeline: Annotated[str, typer.Option(help="recipe name in pipelines/ or a YAML path")] = "dynabench",
    model: Annotated[str | None, typer.Option(help="provider:model for every stage")] = None,
    model_for: Annotated[list[str], typer.Option(help="STAGE=provider:model, repeatable")] = [],  # noqa: B006
    traces: Annotated[bool, typer.Option(help="also write reasoning traces / explanations")] = False,
    db: DbOpt = Path(DEFAULT_DB),
) -> None:
    """Build a DynaBench-style test set (failure modes x business impacts) into table testset_samples."""
    from factory.testset.run import build_testset

    if seed is not None:
        _check_seed(seed)
    overrides = _parse_model_overrides(model, model_for)
    recipe = _run_guarded(load_recipe, pipeline)
    console.print(f"testset: grid {grid or 'testsets/dynabench_grid.yaml'}, db {_db(db)}")
    say = lambda line: console.print(line, markup=False, highlight=False)  # noqa: E731
    try:
        s = event_loop.run(
            build_testset(
                _db(db),
                recipe,
                grid_path=grid,
                seed=seed,
                model_overrides=overrides,
                traces=traces,
                report=say,
            )
        )
    except INPUT_ERRORS as exc:
        _fail(str(exc))
    except BuildStopped as exc:
        _fail(str(exc), code=exc.exit_code)
    except KeyboardInterrupt:
        console.print("interrupted: every answer received was journaled; rerun the same command to resume")
        raise typer.Exit(130) from None
    dropped = ", ".join(f"{k}={v}" for k, v in sorted(s.dropped.items())) or "none"
    say(
        f"done: {s.cases} cases ({s.built} built now, {s.already} before), {s.accepted} accepted rows in "
        f"testset_samples; dropped: {dropped}; {s.wall_s:.1f}s"
    )
    say(
        f"LLM: {s.network_calls} calls paid, {s.cache_hits} answered from cache, ${s.cost_usd:.4f} spent this run"
    )


def _dry_run(db: Path, recipe, endpoints, overrides, n: int, seed: int, pilot: int, as_json: bool) -> None:  # noqa: ANN001
    """The estimate, printed; stored in the db's `estimates` table (the next build of this --n
    is compared against it in `factory status`)."""
    import orjson

    from factory.banks.loader import load_banks
    from factory.runner.estimate import (
        estimate,
        format_estimate,
        pilot_factors,
        recipe_factors,
        store_estimate,
    )
    from factory.store.db import Store

    banks, _ = _run_guarded(load_banks, None)
    if pilot:
        console.print(f"pilot: building {pilot} samples into a temporary database to measure the rates")
        factors = _run_guarded(
            lambda: event_loop.run(pilot_factors(recipe, endpoints, pilot, seed, overrides, banks))
        )
    else:
        factors = recipe_factors(recipe)
    est = _run_guarded(estimate, recipe, endpoints, n, seed, factors, banks)
    try:
        store = Store(db)
        try:
            store_estimate(store, None, est)
        finally:
            store.close()
    except (StoreError, ConfigError, OSError) as exc:
        console.print(f"[bold yellow]WARNING:[/] the estimate was not stored in {db}: {escape(str(exc))}")
    if as_json:
        print(orjson.dumps(est).decode())
    else:
        print(format_estimate(est))


@app.command()
def status(db: DbOpt = Path(DEFAULT_DB)) -> None:
    """Where a build stands: samples, drops, calls and cost so far."""
    from factory.stats.report import status_text

    path = _db(db)
    if not path.exists():
        _fail(f"{path} does not exist; run `factory build` first")
    print(_run_guarded(status_text, path))


@app.command()
def stats(
    db: DbOpt = Path(DEFAULT_DB),
    out: Annotated[Path | None, typer.Option(help="folder for the PNG histograms")] = None,
) -> None:
    """Dataset statistics: policy size and turns (paper Table 2 / Figure 6), labels, filters, cost."""
    from factory.stats.report import stats_report

    path = _db(db)
    if not path.exists():
        _fail(f"{path} does not exist; run `factory build` first")
    out = out or path.parent / f"{path.stem}-stats"
    text = _run_guarded(stats_report, path, out)
    print(text)
    console.print(f"plots written to {out}")


@app.command("export")
def export_cmd(
    out: Annotated[Path, typer.Option(help="output folder")],
    db: DbOpt = Path(DEFAULT_DB),
    seed: Annotated[
        int, typer.Option(help="seed of the policy-hash split (samples without a stored split)")
    ] = 0,
    val_frac: Annotated[
        float,
        typer.Option(
            help="validation share of the policy-hash split; rule-disjoint splits come from the recipe"
        ),
    ] = 0.05,
    test_frac: Annotated[
        float,
        typer.Option(help="test share of the policy-hash split; rule-disjoint splits come from the recipe"),
    ] = 0.05,
    overwrite: Annotated[
        bool,
        typer.Option("--overwrite", help="replace a previous export at --out (swapped in when complete)"),
    ] = False,
    labels: Annotated[
        str,
        typer.Option(help="llm | human (judged samples only) | prefer-human; each row says its label_source"),
    ] = "llm",
    mix: Annotated[
        list[str],
        typer.Option(help="safety=SHARE: that share of each split from imported safety samples"),
    ] = [],  # noqa: B006
    pipeline: Annotated[
        str | None, typer.Option(help="recipe whose export.mix applies when --mix is not given")
    ] = None,
) -> None:
    """Export a Hugging Face DatasetDict (hf/), Parquet and JSONL per split, and a dataset card.

    Written aside and renamed onto --out when complete; a non-empty --out needs --overwrite.
    --mix safety=0.5 mixes in samples imported with `factory safety import` (DynaGuard's 50/50 mix)."""
    from factory.export.hf import export, parse_mix

    def warn(message: str) -> None:
        console.print(f"[bold yellow]WARNING:[/] {escape(message)}", markup=True, highlight=False)

    path = _db(db)
    if not path.exists():
        _fail(f"{path} does not exist; run `factory build` first")
    chosen = _run_guarded(parse_mix, mix) if mix else {}
    if not mix and pipeline is not None:
        chosen = dict(_run_guarded(load_recipe, pipeline).export.mix)
    info = _run_guarded(
        export,
        path,
        out,
        seed=seed,
        val_frac=val_frac,
        test_frac=test_frac,
        overwrite=overwrite,
        warn=warn,
        labels=labels,
        mix=chosen,
    )
    console.print(f"exported {info}")


@app.command()
def push(
    repo: Annotated[str, typer.Option("--repo", help="Hub dataset repo id, e.g. org/dynabench-mine")],
    data: Annotated[Path | None, typer.Option(help="an export folder; default: export --db first")] = None,
    db: DbOpt = Path(DEFAULT_DB),
    private: Annotated[bool, typer.Option(help="create the repo private")] = True,
) -> None:
    """Push the dataset to the Hugging Face Hub with its dataset card (token from HF_TOKEN)."""
    from factory.export.push import hub_token, push_export

    _run_guarded(hub_token)  # fail before exporting anything when there is no token
    if data is None:
        from factory.export.hf import export

        path = _db(db)
        if not path.exists():
            _fail(f"{path} does not exist; run `factory build` first, or pass --data EXPORT_DIR")
        data = path.parent / f"{path.stem}-export"
        # the push's own export folder is refreshed every time (it holds nothing but exports)
        warn = lambda m: console.print(f"[bold yellow]WARNING:[/] {escape(m)}")  # noqa: E731
        console.print(_run_guarded(export, path, data, overwrite=True, warn=warn))
    try:
        url = push_export(data, repo, private=private)
    except (ConfigError, FileNotFoundError) as exc:
        _fail(str(exc))
    console.print(f"pushed to {url}")


safety_app = typer.Typer(
    no_args_is_help=True,
    help="Safety datasets (BeaverTails, WildGuardMix, ToxicChat, Aegis 2.0) as policies.",
)
app.add_typer(safety_app, name="safety")


@safety_app.command("import")
def safety_import(
    name: Annotated[str, typer.Argument(help="beavertails, wildguardmix, toxicchat or aegis2")],
    source: Annotated[
        str, typer.Option("--source", help="local file/folder in the dataset's format, or a Hub id")
    ],
    db: DbOpt = Path(DEFAULT_DB),
    limit: Annotated[int | None, typer.Option(help="read at most K rows of the source")] = None,
    traces: Annotated[
        Path | None, typer.Option(help="JSONL of reasoning traces (GuardReasoner style) to attach")
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of the policy draws")] = 0,
    config: Annotated[str | None, typer.Option(help="Hub config name (Hub ids only)")] = None,
) -> None:
    """Convert a safety dataset to policy-compliance samples (table safety_samples); re-import replaces."""
    from factory.safety.importer import import_source

    _check_seed(seed)
    report = _run_guarded(
        import_source, _db(db), name, source, limit=limit, traces=traces, seed=seed, config=config
    )
    for line in report.lines():
        console.print(escape(line), highlight=False, soft_wrap=True)


banks_app = typer.Typer(no_args_is_help=True, help="Check and grow the seed banks.")
app.add_typer(banks_app, name="banks")


@banks_app.command("check")
def banks_check(
    threshold: Annotated[float, typer.Option(help="cosine similarity counted as near duplicate")] = 0.9,
    root: Annotated[Path | None, typer.Option(help="banks folder")] = None,
    no_embeddings: Annotated[bool, typer.Option(help="skip the embedding near-duplicate scan")] = False,
) -> None:
    """Sizes, schema errors, exact and near duplicates; exit 1 when a bank is malformed."""
    from factory.banks.check import check_banks

    code = check_banks(root, threshold=threshold, embeddings=not no_embeddings)
    raise typer.Exit(code)


@banks_app.command("expand")
def banks_expand(
    target: Annotated[int, typer.Option(help="candidates wanted")],
    category: Annotated[str | None, typer.Option(help="generic category slug")] = None,
    industry: Annotated[str | None, typer.Option(help="industry name or slug")] = None,
    model: Annotated[str, typer.Option(help="provider:model (default: auto)")] = "auto",
    out: Annotated[Path | None, typer.Option(help="candidates file (JSONL)")] = None,
    threshold: Annotated[float, typer.Option(help="near-duplicate cosine threshold")] = 0.9,
    seed: int = 0,
) -> None:
    """Ask an LLM for new rules from seed rules; deduplicate; write candidates for review (never the bank)."""
    from factory.banks.expand import expand

    if (category is None) == (industry is None):
        _fail("give exactly one of --category or --industry")
    path = _run_guarded(
        lambda: event_loop.run(
            expand(
                category=category,
                industry=industry,
                target=target,
                model=model,
                out=out,
                threshold=threshold,
                seed=seed,
            )
        )
    )
    console.print(f"candidates written to {path}; review them, then append the good ones to the bank file")


@banks_app.command("review")
def banks_review(
    candidates: Annotated[Path, typer.Option(help="candidates file written by `banks expand` (JSONL)")],
    dataset: Annotated[str, typer.Option("--dataset", help="Argilla curation dataset name")],
) -> None:
    """Push expand candidates to an Argilla curation dataset (accept / edit / reject in the UI)."""
    try:
        from annotation.curation import push_candidates
    except ImportError as exc:  # pragma: no cover
        _fail(f"annotation is not installed ({exc}); run: pip install -e '.[annotation]'")
    n = _run_guarded(push_candidates, candidates, dataset)
    console.print(
        f"{n} candidate(s) in curation dataset {dataset}; then run `factory banks merge --dataset {dataset}`"
    )


@banks_app.command("merge")
def banks_merge(
    dataset: Annotated[str, typer.Option("--dataset", help="Argilla curation dataset name")],
    root: Annotated[Path | None, typer.Option(help="banks folder")] = None,
    no_embeddings: Annotated[bool, typer.Option(help="skip the embedding scan of the check")] = False,
) -> None:
    """Append accepted (and edited) candidates to their bank files, then run `banks check`."""
    from factory.banks.check import check_banks
    from factory.banks.lexical import normalise_text
    from factory.paths import banks_dir

    try:
        from annotation.curation import accepted_rules
    except ImportError as exc:  # pragma: no cover
        _fail(f"annotation is not installed ({exc}); run: pip install -e '.[annotation]'")
    by_bank, counts = _run_guarded(accepted_rules, dataset)
    base = Path(root) if root else banks_dir()
    added = 0
    for bank, texts in sorted(by_bank.items()):
        path = base / "rules" / f"{bank}.txt"
        if not path.exists():
            _fail(f"{path} does not exist: candidate bank {bank!r} is not in {base}")
        have = {normalise_text(line) for line in path.read_text(encoding="utf-8").splitlines()}
        new = [t for t in dict.fromkeys(texts) if normalise_text(t) not in have]
        if new:
            text = path.read_text(encoding="utf-8")
            sep = "" if text.endswith("\n") or not text else "\n"
            path.write_text(text + sep + "\n".join(new) + "\n", encoding="utf-8")
            added += len(new)
            console.print(f"{path}: {len(new)} rule(s) added")
    console.print(
        f"merged {added} rule(s): {counts['accept']} accepted, {counts['edit']} edited, "
        f"{counts['reject']} rejected, {counts['pending']} not yet reviewed"
    )
    raise typer.Exit(check_banks(root, embeddings=not no_embeddings))


annotate_app = typer.Typer(
    no_args_is_help=True, help="Human validation in Argilla: push samples, pull judgements, report agreement."
)
app.add_typer(annotate_app, name="annotate")
DatasetOpt = Annotated[str, typer.Option("--dataset", help="Argilla dataset name")]


def _annotation():  # noqa: ANN202
    try:
        from annotation import service
    except ImportError as exc:  # pragma: no cover - the extra is missing
        _fail(f"annotation is not installed ({exc}); run: pip install -e '.[annotation]'")
    return service


@annotate_app.command("push")
def annotate_push(
    dataset: DatasetOpt,
    n: Annotated[int, typer.Option("--n", help="samples to push")],
    db: DbOpt = Path(DEFAULT_DB),
    strategy: Annotated[
        str, typer.Option(help="random | hard (long policies/dialogues) | stratified (PASS/FAIL x dynamic)")
    ] = "random",
    overlap: Annotated[
        int, typer.Option(help="annotators who must submit each record (Argilla task distribution)")
    ] = 1,
    split: Annotated[
        str | None, typer.Option(help="only samples of this export split (train/validation/test)")
    ] = None,
    blind: Annotated[bool, typer.Option("--blind", help="hide the LLM's labels and explanations")] = False,
    seed: Annotated[int, typer.Option(help="seed of the selection and of the split assignment")] = 0,
) -> None:
    """Create or update an Argilla dataset with n samples (records keyed by sample_id: no duplicates)."""
    service = _annotation()
    out = _run_guarded(
        service.push,
        _db(db),
        dataset,
        n,
        strategy=strategy,
        overlap=overlap,
        split=split,
        blind=blind,
        seed=seed,
    )
    typer.echo(
        f"pushed {out['pushed']} records to {dataset} (strategy {strategy}, overlap {overlap}{', blind' if blind else ''})"
    )


@annotate_app.command("pull")
def annotate_pull(dataset: DatasetOpt, db: DbOpt = Path(DEFAULT_DB)) -> None:
    """Submitted responses into human_judgements / human_rule_judgements (idempotent)."""
    service = _annotation()
    out = _run_guarded(service.pull, _db(db), dataset)
    typer.echo(
        f"pulled {out['judgements']} judgements ({out['rule_judgements']} per rule) on {out['samples']} samples "
        f"from {len(out['annotators'])} annotator(s)"
    )


@annotate_app.command("report")
def annotate_report(
    dataset: DatasetOpt,
    db: DbOpt = Path(DEFAULT_DB),
    gate: Annotated[float, typer.Option(help="development gate: sample-level agreement needed (0-1)")] = 0.9,
    as_json: Annotated[
        bool, typer.Option("--json", help="one JSON object (keys in annotation/README.md)")
    ] = False,
) -> None:
    """Human-vs-LLM agreement, Cohen's and Fleiss' kappa, confusion matrix, worst groups, the gate."""
    service = _annotation()
    out = _run_guarded(service.report, _db(db), dataset, gate=gate)
    if as_json:
        import orjson

        typer.echo(orjson.dumps(out).decode())
    else:
        typer.echo(service.format_report(out))


def _mount_training() -> None:
    """`train` and `eval` import torch/TRL (seconds): load them only when asked for."""
    wanted = (
        len(sys.argv) > 1
        and sys.argv[1] in ("train", "eval")
        or os.environ.get("FACTORY_LOAD_TRAINING") == "1"
    )
    if wanted:
        try:
            from training.cli import eval_command, train_app
        except ImportError as exc:
            missing = str(exc)
        else:
            app.add_typer(
                train_app, name="train", help="Fine-tune a guardian model with TRL (SFT, GRPO, DPO)."
            )
            app.command("eval", help="Score a model or an LLM provider as a guardian on an export.")(
                eval_command
            )
            return
    else:
        missing = ""

    def _placeholder(name: str, help_text: str) -> None:
        @app.command(
            name, help=help_text, context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
        )
        def _cmd() -> None:
            _fail(
                f"training is not installed ({missing}); run: pip install torch==2.13.0 && pip install -e '.[train]'"
            )

    _placeholder("train", "Fine-tune a guardian model with TRL (SFT, GRPO, DPO). Needs the train extra.")
    _placeholder(
        "eval", "Score a model or an LLM provider as a guardian on an export. Needs the train extra."
    )


_mount_training()


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
