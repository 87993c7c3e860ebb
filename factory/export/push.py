"""`factory push`: upload an export to the Hugging Face Hub (token from the environment only)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from factory.errors import ConfigError


def hub_token() -> str:
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if not token:
        raise ConfigError(
            "no Hugging Face token: set HF_TOKEN in the environment (a write token from your "
            "Hub settings). The token is read from the environment only and never stored."
        )
    return token


def push_export(data: Path, repo: str, *, private: bool = True, api: Any = None) -> str:
    """Create the dataset repo if needed and upload hf-less files: parquet splits + README card."""
    if not (data / "parquet").is_dir() or not (data / "README.md").exists():
        raise ConfigError(
            f"{data} is not an export folder (expected parquet/ and README.md from `factory export`)"
        )
    if "/" not in repo:
        raise ConfigError(f"--repo must look like owner/name, got {repo!r}")
    token = hub_token()
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    try:
        api.create_repo(repo_id=repo, repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(
            repo_id=repo,
            repo_type="dataset",
            folder_path=str(data),
            allow_patterns=["parquet/*.parquet", "README.md", "stats/*.png"],
            commit_message="Upload DynaBench factory export",
        )
    except Exception as exc:  # network / auth errors from the Hub client
        raise ConfigError(f"push to {repo} failed: {type(exc).__name__}: {exc}") from exc
    return f"https://huggingface.co/datasets/{repo}"
