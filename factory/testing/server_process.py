"""Subprocess helper for tests and benchmarks: :class:`FakeServerProcess` runs the fake LLM server
(``python -m factory.testing.fake_llm_server``) in a child process and talks to its ``/_fake/``
control API.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson

from factory.testing.profiles import ProfileLike, parse_profile

__all__ = ["FakeServerProcess"]

_JSON = "application/json"
_REPO_ROOT = Path(__file__).resolve().parents[2]


class FakeServerProcess:
    """Runs the fake server in a subprocess; a context manager that never leaks the process.

    Example::

        with FakeServerProcess(latency=0.01) as srv:
            srv.script([{"kind": "rate_limit", "retry_after": 1}])
            client = openai.OpenAI(base_url=srv.url + "/v1", api_key="x")
            ...
            assert srv.stats()["faults_applied"] == 1

    ``profile`` is a field profile of the structured answers (``--profile``): a preset name such as
    ``"labeller"`` (a labeller double: per-turn ``ambiguity`` skewed low, 10% of draws >= 6, and 8%
    ``"VIOLATED"`` labels), or a mapping ``{property: {"weights": [w_min, w_min+1, ...]}}`` (integer
    properties) / ``{property: {"choices": {value: weight, ...}}}`` (enum/string properties), or its
    JSON text; None (default) = uniform answers. It is checked here (ValueError). ``set_profile``
    changes it at run time (``POST /_fake/profile``) for the requests that follow; ``get_profile()``
    returns the active one. Same request, same answer still holds with a profile.

    ``batch_delay_s`` (``--batch-delay``): how long a batch job stays in progress (server default 0.2 s).
    """

    def __init__(
        self,
        *,
        latency: float = 0.0,
        rate_limit: float = 0.0,
        fail_rate: float = 0.0,
        fail_seed: int = 0,
        require_key: str | None = None,
        profile: ProfileLike | None = None,
        reasoning: bool = False,
        batch_delay_s: float | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        uvloop: bool = True,
        startup_timeout: float = 20.0,
        stop_timeout: float = 5.0,
        python: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.args = ["--host", host, "--port", str(port)]
        if latency:
            self.args += ["--latency", repr(float(latency))]
        if rate_limit:
            self.args += ["--rate-limit", repr(float(rate_limit))]
        if fail_rate:
            self.args += ["--fail-rate", repr(float(fail_rate)), "--fail-seed", str(int(fail_seed))]
        if require_key:
            self.args += ["--require-key", require_key]
        parsed = parse_profile(profile)
        if parsed is not None:
            self.args += ["--profile", parsed.name or orjson.dumps(parsed.spec).decode()]
        if reasoning:
            self.args.append("--reasoning")
        if batch_delay_s is not None:
            self.args += ["--batch-delay", repr(float(batch_delay_s))]
        if not uvloop:
            self.args.append("--no-uvloop")
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.python = python or sys.executable
        self.env = dict(env) if env is not None else None
        self.proc: subprocess.Popen[bytes] | None = None
        self.url: str = ""
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        self._reader: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> FakeServerProcess:
        if self.proc is not None:
            raise RuntimeError("already started")
        env = dict(os.environ if self.env is None else self.env)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.proc = subprocess.Popen(
            [self.python, "-m", "factory.testing.fake_llm_server", *self.args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            env=env,
            cwd=str(_REPO_ROOT),
        )
        self._reader = threading.Thread(target=self._drain, args=(self.proc.stdout,), daemon=True)
        self._reader.start()
        deadline = time.monotonic() + self.startup_timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"fake LLM server did not print READY within {self.startup_timeout}s")
                try:
                    line = self._lines.get(timeout=min(left, 0.5))
                except queue.Empty:
                    if self.proc.poll() is not None:
                        raise RuntimeError(
                            f"fake LLM server exited early with code {self.proc.returncode}"
                        ) from None
                    continue
                if line is None:
                    raise RuntimeError(f"fake LLM server exited early with code {self.proc.wait()}")
                text = line.decode(errors="replace").strip()
                if text.startswith("READY "):
                    self.url = text.split(" ", 1)[1]
                    return self
        except BaseException:
            self.stop()
            raise

    def _drain(self, stream: Any) -> None:
        try:
            for line in iter(stream.readline, b""):
                self._lines.put(line)
        except (OSError, ValueError):
            pass
        finally:
            self._lines.put(None)

    def stop(self) -> int | None:
        """Terminate the process (SIGTERM, then SIGKILL after ``stop_timeout``); returns its exit code."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        try:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=self.stop_timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=self.stop_timeout)
        finally:
            if proc.stdout is not None:
                proc.stdout.close()
            if self._reader is not None:
                self._reader.join(timeout=1.0)
        return proc.returncode

    def __enter__(self) -> FakeServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    # -- control API ---------------------------------------------------------------------------
    def _call(self, method: str, path: str, payload: Any = None, timeout: float = 10.0) -> Any:
        if not self.url:
            raise RuntimeError("fake LLM server is not running")
        data = orjson.dumps(payload) if payload is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", _JSON)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return orjson.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise ValueError(
                f"fake server rejected {method} {path}: {exc.read().decode(errors='replace')}"
            ) from exc

    def script(self, faults: Iterable[Mapping[str, Any]] | Mapping[str, Any]) -> int:
        """Queue faults (a list of fault objects, or one); returns the queue length."""
        if isinstance(faults, Mapping):
            faults = [faults]
        return self._call("POST", "/_fake/script", {"faults": list(faults)})["queued"]

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/_fake/stats")

    def reset(self) -> None:
        """Clear counters and queued faults (the profile stays)."""
        self._call("POST", "/_fake/reset", {})

    def set_profile(self, profile: ProfileLike | None) -> dict[str, Any]:
        """Set the field profile (preset name, mapping or None) for the requests from now on; returns
        ``{"profile": spec or None, "name": preset or None}``. Raises ValueError on a bad profile."""
        parsed = parse_profile(profile)
        payload = None if parsed is None else (parsed.name or dict(parsed.spec))
        info = self._call("POST", "/_fake/profile", {"profile": payload})
        return {"profile": info["profile"], "name": info["name"]}

    def get_profile(self) -> dict[str, Any]:
        """``{"profile": spec or None, "name": preset or None}`` of the running server."""
        return self._call("GET", "/_fake/profile")
