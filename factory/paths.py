"""Where the project's data folders live (banks/, prompts/, pipelines/), overridable by env."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _dir(env: str, name: str) -> Path:
    return Path(os.environ[env]) if os.environ.get(env) else PROJECT_ROOT / name


def banks_dir() -> Path:
    return _dir("FACTORY_BANKS", "banks")


def prompts_dir() -> Path:
    return _dir("FACTORY_PROMPTS", "prompts")


def pipelines_dir() -> Path:
    return _dir("FACTORY_PIPELINES", "pipelines")


def outputs_dir() -> Path:
    return _dir("FACTORY_OUTPUTS", "outputs")
