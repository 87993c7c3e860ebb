"""The layer table in layers.toml is what the imports do: every import of factory/, training/,
annotation/ and bench/ (module level and inside functions) is checked against it with `ast`."""

from __future__ import annotations

import ast
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("factory", "training", "annotation", "bench")


@dataclass
class Layer:
    name: str
    modules: list[str]
    may_import: list[str]


def load_layers(path: Path = ROOT / "layers.toml") -> list[Layer]:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    return [Layer(d["name"], d["modules"], d["may_import"]) for d in data["layer"]]


def layer_of(module: str, layers: list[Layer]) -> Layer | None:
    best: tuple[int, Layer] | None = None
    for layer in layers:
        for prefix in layer.modules:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[0]:
                    best = (len(prefix), layer)
    return best[1] if best else None


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, imported module) for every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
    return found


def violations(root: Path, layers: list[Layer]) -> list[str]:
    problems = []
    for package in PACKAGES:
        if not (root / package).exists():
            continue
        for path in sorted((root / package).rglob("*.py")):
            module = module_name(path, root)
            own = layer_of(module, layers)
            rel = path.relative_to(root)
            if own is None:
                problems.append(f"{rel}: module {module} belongs to no layer in layers.toml")
                continue
            allowed = {own.name, *own.may_import}
            for line, target in imports_of(path, module):
                if not target.startswith(PACKAGES):
                    continue
                theirs = layer_of(target, layers)
                if theirs is None:
                    problems.append(f"{rel}:{line}: imports {target}, which belongs to no layer")
                elif theirs.name not in allowed:
                    problems.append(
                        f"{rel}:{line}: imports {target} (layer {theirs.name}); layer {own.name} may import "
                        f"only {sorted(allowed)}"
                    )
    return problems


def test_layer_table_is_an_order():
    layers = load_layers()
    seen: set[str] = set()
    for layer in layers:
        unknown_or_later = [name for name in layer.may_import if name not in seen]
        assert not unknown_or_later, f"layer {layer.name} may import {unknown_or_later}, not listed above it"
        seen.add(layer.name)


def test_every_import_obeys_the_layer_table():
    problems = violations(ROOT, load_layers())
    assert not problems, "imports against layers.toml:\n" + "\n".join(problems)


def test_an_import_against_the_order_is_reported(tmp_path):
    """The checker is not vacuous: an upward import in a copy of the tree is named with file and rule."""
    (tmp_path / "factory" / "llm").mkdir(parents=True)
    (tmp_path / "factory" / "__init__.py").write_text("")
    (tmp_path / "factory" / "llm" / "__init__.py").write_text("")
    (tmp_path / "factory" / "llm" / "leaky.py").write_text(
        "def f():\n    from factory.store.db import Store\n    from .client import LLMClient\n    return Store\n"
    )
    problems = violations(tmp_path, load_layers())
    assert problems == [
        "factory/llm/leaky.py:2: imports factory.store.db (layer store); layer llm may import only "
        "['foundation', 'llm']"
    ]
