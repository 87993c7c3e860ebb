"""Reward functions for GRPO, usable on their own.

Each is a plain function ``f(completions, **columns) -> list[float]`` in TRL's convention:
``completions`` is a list of strings (or of conversational completions, lists of
``{"role", "content"}`` dicts) and every dataset column arrives as a keyword list of the same
length. Columns used here:

* ``label`` - gold ``PASS``/``FAIL`` (required by :func:`correctness_reward`).
* ``prefill`` - optional; the tag the prompt ended with (``<think>``/``<answer>``). TRL returns
  only the generated continuation, so the prefill is always put back in front of it before
  parsing. Without it the completion is parsed as it stands.

Unknown keyword arguments (TRL passes ``prompts``, ``completion_ids``, ``trainer_state`` ...)
are ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from training.format import normalize_label, parse_output

RewardFunc = Callable[..., list[float]]


def completion_text(completion: Any) -> str:
    """Text of one completion, standard (str) or conversational (list of messages)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return str(completion.get("content", ""))
    if isinstance(completion, Sequence):
        parts = [str(m.get("content", "")) for m in completion if isinstance(m, dict)]
        return "".join(parts)
    return str(completion)


def _parse(completion: Any, prefill: str | None) -> Any:
    return parse_output((prefill or "") + completion_text(completion))


def _prefills(prefill: Sequence[str | None] | str | None, n: int) -> list[str | None]:
    if prefill is None or isinstance(prefill, str):
        return [prefill] * n
    if len(prefill) != n:
        raise ValueError(f"prefill has {len(prefill)} entries for {n} completions")
    return list(prefill)


def correctness_reward(
    completions: Sequence[Any],
    label: Sequence[str],
    prefill: Sequence[str | None] | str | None = None,
    **_: Any,
) -> list[float]:
    """1.0 when the parsed verdict equals the gold label, else 0.0 (unparseable counts as wrong)."""
    if len(label) != len(completions):
        raise ValueError(f"label has {len(label)} entries for {len(completions)} completions")
    prefills = _prefills(prefill, len(completions))
    rewards = []
    for completion, gold, pre in zip(completions, label, prefills, strict=True):
        predicted = _parse(completion, pre).label
        rewards.append(1.0 if predicted is not None and predicted == normalize_label(gold) else 0.0)
    return rewards


def make_correctness_reward(miss_penalty: float = 0.0) -> RewardFunc:
    """Correctness with an extra cost for a missed violation (gold FAIL answered PASS).

    ``miss_penalty=0`` is :func:`correctness_reward`. A positive value tilts the policy towards
    recall, the metric that matters most for a guardian.
    """
    if miss_penalty == 0:
        return correctness_reward

    def recall_weighted_correctness_reward(
        completions: Sequence[Any],
        label: Sequence[str],
        prefill: Sequence[str | None] | str | None = None,
        **_: Any,
    ) -> list[float]:
        base = correctness_reward(completions, label, prefill)
        prefills = _prefills(prefill, len(completions))
        out = []
        for r, completion, gold, pre in zip(base, completions, label, prefills, strict=True):
            predicted = _parse(completion, pre).label
            missed = normalize_label(gold) == "FAIL" and predicted == "PASS"
            out.append(r - miss_penalty if missed else r)
        return out

    return recall_weighted_correctness_reward


def format_reward(
    completions: Sequence[Any],
    prefill: Sequence[str | None] | str | None = None,
    **_: Any,
) -> list[float]:
    """1.0 for exactly one of the two trained formats, 0.5 when only a verdict is readable, else 0.

    Reasoning form: ``<think>non-empty</think> <answer>PASS|FAIL</answer>``; fast form:
    ``<answer>PASS|FAIL</answer>`` optionally followed by ``<explanation>...</explanation>``;
    nothing may follow the last closing tag.
    """
    prefills = _prefills(prefill, len(completions))
    rewards = []
    for completion, pre in zip(completions, prefills, strict=True):
        parsed = _parse(completion, pre)
        rewards.append(1.0 if parsed.well_formed else (0.5 if parsed.label is not None else 0.0))
    return rewards


def make_length_budget_reward(budget_words: int = 300, hard_limit_factor: float = 2.0) -> RewardFunc:
    """Reward for keeping the reasoning within a budget (counted in whitespace-separated words).

    1.0 up to ``budget_words``, then falls linearly to 0.0 at ``hard_limit_factor * budget``.
    Completions without a ``<think>`` block (fast mode) get 1.0; an unterminated think block is
    measured as it stands.
    """
    if budget_words <= 0:
        raise ValueError("budget_words must be positive")
    if hard_limit_factor <= 1.0:
        raise ValueError("hard_limit_factor must be > 1")

    def reasoning_length_reward(
        completions: Sequence[Any],
        prefill: Sequence[str | None] | str | None = None,
        **_: Any,
    ) -> list[float]:
        prefills = _prefills(prefill, len(completions))
        rewards = []
        for completion, pre in zip(completions, prefills, strict=True):
            parsed = _parse(completion, pre)
            if parsed.mode != "think":
                rewards.append(1.0)
                continue
            body = parsed.reasoning if parsed.reasoning is not None else parsed.text[len("<think>") :]
            words = len(body.split())
            if words <= budget_words:
                rewards.append(1.0)
            else:
                over = (words - budget_words) / (budget_words * (hard_limit_factor - 1.0))
                rewards.append(max(0.0, 1.0 - over))
        return rewards

    return reasoning_length_reward


def build_reward_functions(
    correct_weight: float = 1.0,
    format_weight: float = 0.2,
    length_weight: float = 0.0,
    length_budget_words: int = 300,
    miss_penalty: float = 0.0,
) -> tuple[list[RewardFunc], list[float]]:
    """Reward functions and their weights for GRPO (zero-weight terms are left out)."""
    funcs: list[RewardFunc] = []
    weights: list[float] = []
    if correct_weight:
        funcs.append(make_correctness_reward(miss_penalty))
        weights.append(correct_weight)
    if format_weight:
        funcs.append(format_reward)
        weights.append(format_weight)
    if length_weight:
        funcs.append(make_length_budget_reward(length_budget_words))
        weights.append(length_weight)
    if not funcs:
        raise ValueError("all reward weights are zero")
    return funcs, weights
