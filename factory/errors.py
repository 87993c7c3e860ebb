"""Error types shared by every layer (the foundation: imports nothing from the rest of factory)."""

from __future__ import annotations


class ConfigError(Exception):
    """Invalid configuration or input (recipe, flag, model spec, pricing table, bank, export target).

    The CLI prints its message as one line and exits 2; the message names the file, row or flag.
    """


class BuildStopped(Exception):
    """A build stopped before its target for a reason that is not bad input (a provider outage,
    repeated unusable answers, a budget). Nothing is lost: rerunning the same command resumes.

    The CLI prints the message as one line and exits with `exit_code`.
    """

    def __init__(self, message: str, exit_code: int = 3) -> None:
        self.exit_code = exit_code
        super().__init__(message)
