from __future__ import annotations

import pytest

from training.rewards import (
    build_reward_functions,
    correctness_reward,
    format_reward,
    make_correctness_reward,
    make_length_budget_reward,
)


def test_correctness_reward_uses_label_column_and_prefill():
    completions = ["PASS</answer>", "FAIL</answer>", "garbage", " fail </answer>"]
    labels = ["PASS", "PASS", "FAIL", "fail"]
    assert correctness_reward(completions, label=labels, prefill="<answer>") == [1.0, 0.0, 0.0, 1.0]
    # the prefill is always part of the text: skipping past an open <think> gives no verdict
    think = ["R</think>\n<answer>FAIL</answer>", "<answer>FAIL</answer>"]
    assert correctness_reward(think, label=["FAIL", "FAIL"], prefill=["<think>", "<think>"]) == [1.0, 0.0]
    assert correctness_reward(["<answer>PASS</answer>"], label=["PASS"]) == [1.0]  # no prefill column
    # ignores extra TRL keyword arguments
    assert correctness_reward(
        ["<answer>PASS</answer>"], label=["PASS"], prompts=["p"], trainer_state=None
    ) == [1.0]


def test_correctness_reward_accepts_conversational_completions():
    completions = [[{"role": "assistant", "content": "<answer>FAIL</answer>"}]]
    assert correctness_reward(completions, label=["FAIL"]) == [1.0]


def test_miss_penalty_only_hits_missed_violations():
    f = make_correctness_reward(miss_penalty=0.5)
    out = f(
        ["<answer>PASS</answer>", "<answer>FAIL</answer>", "<answer>FAIL</answer>"],
        label=["FAIL", "PASS", "FAIL"],
    )
    assert out == [-0.5, 0.0, 1.0]
    assert make_correctness_reward(0.0) is correctness_reward


def test_format_reward_levels():
    completions = [
        "R</think>\n<answer>PASS</answer>",  # perfect think form (after prefill)
        "R</think>\n<answer>PASS</answer> extra",  # readable, not exact
        "no tags at all",
    ]
    assert format_reward(completions, prefill=["<think>", "<think>", "<think>"]) == [1.0, 0.5, 0.0]
    assert format_reward(["<answer>FAIL</answer>\n<explanation>x</explanation>"]) == [1.0]


def test_length_budget_reward():
    f = make_length_budget_reward(budget_words=10, hard_limit_factor=2.0)
    short = "<think>" + "w " * 5 + "</think><answer>PASS</answer>"
    mid = "<think>" + "w " * 15 + "</think><answer>PASS</answer>"
    long = "<think>" + "w " * 40 + "</think><answer>PASS</answer>"
    assert f([short, mid, long, "<answer>PASS</answer>"]) == [1.0, 0.5, 0.0, 1.0]
    with pytest.raises(ValueError):
        make_length_budget_reward(0)


def test_build_reward_functions_skips_zero_weights():
    funcs, weights = build_reward_functions(correct_weight=1.0, format_weight=0.0, length_weight=0.3)
    assert weights == [1.0, 0.3]
    assert len(funcs) == 2
    with pytest.raises(ValueError):
        build_reward_functions(0, 0, 0)
