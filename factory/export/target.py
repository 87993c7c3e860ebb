"""Where an export goes: checking `--out`, the partial folder beside it, and the swap into place.

An export is written whole into a hidden sibling of `--out`, `.<name>.partial-<pid>`, and renamed
onto `--out` only once every file is written and synced. A process killed before that rename
leaves `--out` as it was (absent, or the previous export) and a partial folder that the next export
to the same `--out` removes. `--overwrite` moves the previous export aside (`.<name>.old-<pid>`),
renames the new one into place and only then deletes the old one; if the process dies between
those two renames, the next export puts the old one back first.

Every refusal is a `ConfigError` whose one-line message names the path.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path

from factory.errors import ConfigError
from factory.store.live_status import pid_alive

# the top-level entries an export writes; --overwrite replaces only a folder made of these
EXPORT_ENTRIES = frozenset({"hf", "parquet", "jsonl", "stats", "README.md"})


def check_target(out: Path, *, overwrite: bool, db: Path | None = None) -> Path:
    """The real path to export to, after refusing every target that would lose or mix data.

    `out` is the path as the user gave it (named in messages); the result has symlinks resolved.
    Nothing is written here.
    """
    real = Path(os.path.realpath(out))
    if real.parent == real:
        raise ConfigError(f"--out {out} is a filesystem root; choose a folder for the export")
    if db is not None and Path(os.path.realpath(db)).is_relative_to(real):
        raise ConfigError(
            f"--out {out} contains the database {db}; choose a folder of its own for the export"
        )
    if real.exists() and not real.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder; choose a folder path for the export")
    ancestor = real.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"cannot export to {out}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot export to {out}: no permission to write in {ancestor}")
    if real.is_dir():
        try:
            entries = sorted(p.name for p in real.iterdir())
        except OSError as exc:
            raise ConfigError(f"cannot export to {out}: {exc.strerror or exc}") from exc
        if entries and not overwrite:
            raise ConfigError(
                f"--out {out} already exists and is not empty; pass --overwrite to replace it, "
                f"or choose another folder"
            )
        foreign = [name for name in entries if name not in EXPORT_ENTRIES]
        if foreign:
            raise ConfigError(
                f"--out {out} holds entries that `factory export` does not write ({_some(foreign)}); "
                f"--overwrite replaces only a previous export, so move them or choose another folder"
            )
    return real


def partial_path(real: Path) -> Path:
    return real.parent / f".{real.name}.partial-{os.getpid()}"


def make_partial(real: Path, out: Path) -> Path:
    """Create the parents of `--out` and an empty partial folder beside it."""
    tmp = partial_path(real)
    try:
        real.parent.mkdir(parents=True, exist_ok=True)
        _remove(tmp)  # a leftover of a dead process that had our pid
        tmp.mkdir()
    except OSError as exc:
        raise ConfigError(f"cannot export to {out}: {exc.strerror or exc} ({exc.filename or tmp})") from exc
    return tmp


def clean_leftovers(real: Path) -> None:
    """Remove partial folders of killed exports to `real`; put back an old export a killed
    `--overwrite` had moved aside when nothing took its place. Folders of live exports are left alone."""
    pattern = re.compile(rf"\.{re.escape(real.name)}\.(partial|old)-(\d+)")
    try:
        entries = sorted(real.parent.iterdir()) if real.parent.is_dir() else []
    except OSError:
        return
    for entry in entries:
        m = pattern.fullmatch(entry.name)
        if not m:
            continue
        pid = int(m[2])
        if pid != os.getpid() and pid_alive(pid):
            continue
        if m[1] == "old" and not os.path.lexists(real):
            try:
                os.replace(entry, real)
                continue
            except OSError:
                pass
        _remove(entry)


def swap_in(tmp: Path, real: Path, out: Path, *, overwrite: bool) -> None:
    """Rename the complete partial folder onto `--out` (replacing a previous export if allowed)."""
    _fsync_tree(tmp)
    if overwrite and real.is_dir() and any(real.iterdir()):
        old = real.parent / f".{real.name}.old-{os.getpid()}"
        _remove(old)
        os.replace(real, old)
        try:
            os.replace(tmp, real)
        except OSError:
            os.replace(old, real)
            raise
        _fsync_dir(real.parent)
        _remove(old)
        return
    try:
        os.replace(tmp, real)  # `real` is absent or an empty folder
    except OSError as exc:
        raise ConfigError(
            f"--out {out} was filled by something else during the export; pass --overwrite to replace it, "
            f"or choose another folder"
        ) from exc
    _fsync_dir(real.parent)


def discard(tmp: Path) -> None:
    _remove(tmp)


def _some(names: Iterable[str], k: int = 3) -> str:
    names = list(names)
    return ", ".join(names[:k]) + (f" and {len(names) - k} more" if len(names) > k else "")


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """Flush every file and folder of the export to disk before it is renamed into place."""
    for folder, _dirs, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(folder))
