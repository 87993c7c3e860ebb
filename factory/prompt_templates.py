"""Load a stage's prompt template (prompts/<name>.txt) and render it into chat messages.

A template has `[system]` and `[user]` sections and `$name` placeholders (string.Template). Its
content hash is recorded with every call made from it, so a prompt change is visible in the data.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from string import Template

from factory.llm.types import Message
from factory.paths import prompts_dir


class PromptError(ValueError):
    pass


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    system: Template
    user: Template
    hash: str

    def render(self, **values: object) -> list[Message]:
        try:
            system = self.system.substitute(values).strip()
            user = self.user.substitute(values).strip()
        except KeyError as exc:
            raise PromptError(
                f"prompts/{self.name}.txt uses ${exc.args[0]} but the stage did not supply it"
            ) from exc
        msgs = [Message(role="system", content=system)] if system else []
        msgs.append(Message(role="user", content=user))
        return msgs


@functools.lru_cache(maxsize=32)
def load_prompt(name: str) -> PromptTemplate:
    path = prompts_dir() / f"{name}.txt"
    if not path.exists():
        raise PromptError(f"{path}: prompt template not found")
    text = path.read_text(encoding="utf-8")
    parts = re.split(r"^\[(system|user)\]\s*$", text, flags=re.M)
    sections = {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}
    if "user" not in sections:
        raise PromptError(f"{path}: needs a [user] section (and optionally [system])")
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return PromptTemplate(name, Template(sections.get("system", "")), Template(sections["user"]), digest)
