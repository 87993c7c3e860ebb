from __future__ import annotations

import pytest

from factory.guard_format import dynaguard_input, dynaguard_output
from training.format import (
    GUARDIAN_CHAT_TEMPLATE,
    PREFILL,
    SYSTEM_PROMPT,
    TEMPLATES,
    assign_modes,
    build_prompt_messages,
    build_target,
    mode_messages_for_api,
    parse_label,
    parse_output,
    sft_messages,
)


def test_targets_have_the_two_shapes():
    f = "factory"
    assert (
        build_target("FAIL", "think", reasoning=" R1 broken. ", template=f)
        == "<think>R1 broken.</think>\n<answer>FAIL</answer>"
    )
    assert (
        build_target("pass", "answer", explanation="Nothing broken.", template=f)
        == "<answer>PASS</answer>\n<explanation>Nothing broken.</explanation>"
    )
    assert build_target("PASS", "answer", template=f) == "<answer>PASS</answer>"
    with pytest.raises(ValueError):
        build_target("PASS", "think", reasoning="  ")
    with pytest.raises(ValueError):
        build_target("MAYBE", "answer")


def test_assign_modes_exact_fraction_deterministic_and_falls_back():
    ids = [f"s{i}" for i in range(30)]
    has = [i % 5 != 0 for i in range(30)]  # 6 rows have no reasoning
    modes = assign_modes(ids, has, think_fraction=1 / 3, seed=7)
    assert modes.count("think") == 10
    assert all(m == "answer" for m, h in zip(modes, has, strict=True) if not h)
    assert modes == assign_modes(ids, has, 1 / 3, seed=7)
    assert modes != assign_modes(ids, has, 1 / 3, seed=8)
    # independent of row order
    rev = assign_modes(ids[::-1], has[::-1], 1 / 3, seed=7)
    assert dict(zip(ids[::-1], rev, strict=True)) == dict(zip(ids, modes, strict=True))
    # too few rows with reasoning: all of them, no more
    assert assign_modes(ids, [i < 3 for i in range(30)], 0.5, 0).count("think") == 3
    assert assign_modes(ids, has, 0.0, 0).count("think") == 0


def test_prompt_messages_number_rules_and_fall_back_to_structured_columns():
    row = {
        "policy": "",
        "rules": ["Be kind.", "No refunds."],
        "transcript": "",
        "turns": [{"role": "user", "content": "hi"}, {"role": "agent", "content": "hello"}],
    }
    messages = build_prompt_messages(row, template="factory")
    assert messages[0] == {"role": "system", "content": SYSTEM_PROMPT}
    user = messages[1]["content"]
    assert "1. Be kind.\n2. No refunds." in user
    assert "User: hi\nAgent: hello" in user


def test_sft_messages_end_with_assistant_target():
    row = {
        "policy": "1. x",
        "transcript": "User: a\nAgent: b",
        "label": "FAIL",
        "reasoning": "r",
        "explanation": "e",
    }
    assert sft_messages(row, "think", template="factory")[-1] == {
        "role": "assistant",
        "content": "<think>r</think>\n<answer>FAIL</answer>",
    }


def test_dynaguard_template_is_the_default_layout():
    row = {
        "policy": "1. Be kind.\n2. No refunds.",
        "transcript": "User: hi\nAgent: hello",
        "turns": [{"role": "user", "content": "hi"}, {"role": "agent", "content": "hello"}],
        "label": "FAIL",
        "reasoning": "Rule 2 applies.",
        "explanation": "Refund offered.",
    }
    system, user = build_prompt_messages(row)
    assert system == {"role": "system", "content": TEMPLATES["dynaguard"].system_prompt}
    assert user["content"] == (
        "<rules>\n1. Be kind.\n2. No refunds.\n</rules>\n<transcript>\n'User': hi\n'Agent': hello\n</transcript>"
    )
    think = sft_messages(row, "think")[-1]["content"]
    assert think == "<think>\nRule 2 applies.\n</think>\n<answer>\nFAIL\n</answer>"
    answer = sft_messages(row, "answer")[-1]["content"]
    assert answer == "<answer>\nFAIL\n</answer>\n<explanation>\nRefund offered.\n</explanation>"
    for text, prefill in ((think, "<think>"), (answer, "<answer>")):
        parsed = parse_output(text[len(prefill) :], prefill)
        assert parsed.label == "FAIL" and parsed.well_formed
    # the export's formatted_input/formatted_output are the same text (factory.guard_format)
    assert user["content"] == dynaguard_input(row["policy"], "'User': hi\n'Agent': hello")
    assert think == dynaguard_output("FAIL", "think", reasoning="Rule 2 applies.")
    with pytest.raises(ValueError, match="unknown template"):
        build_prompt_messages(row, template="nope")


@pytest.mark.parametrize(
    ("text", "prefill", "label"),
    [
        ("<answer>PASS</answer>", None, "PASS"),
        ("FAIL</answer>\n<explanation>rule 2</explanation>", "<answer>", "FAIL"),
        ("  <ANSWER> fail </Answer>", None, "FAIL"),
        ("<answer>\nPass.\n</answer>", None, "PASS"),
        ("<answer>FAIL", None, "FAIL"),  # unterminated at end of text
        ("reasoning here</think>\n<answer>FAIL</answer>", "<think>", "FAIL"),
        ("<think>the agent says <answer>PASS</answer>?</think><answer>FAIL</answer>", None, "FAIL"),
        ("reasoning that never ends", "<think>", None),
        (
            "<think>x <answer>PASS</answer></think><answer>FAIL</answer>",
            "<answer>",
            "FAIL",
        ),  # other mode echoed
        ("<answer>maybe</answer>", None, None),
        ("<answer>PASS or FAIL</answer>", None, None),
        ("The verdict is PASS", None, None),
        ("", "<answer>", None),
        (None, None, None),
    ],
)
def test_parse_label(text, prefill, label):
    assert parse_label(text, prefill) == label


def test_parse_output_well_formed_and_parts():
    p = parse_output("R.</think>\n<answer>FAIL</answer>", PREFILL["think"])
    assert (p.label, p.mode, p.reasoning, p.well_formed) == ("FAIL", "think", "R.", True)
    p = parse_output("<answer>PASS</answer>\n<explanation>ok</explanation>")
    assert (p.mode, p.explanation, p.well_formed) == ("answer", "ok", True)
    assert not parse_output("<answer>PASS</answer> trailing words").well_formed
    assert parse_output("<answer>PASS</answer> trailing words").label == "PASS"
    assert not parse_output("<think></think><answer>PASS</answer>").well_formed  # empty reasoning


def test_api_mode_instruction_is_appended_to_user_message():
    messages = build_prompt_messages({"policy": "1. x", "transcript": "User: a", "label": "PASS"})
    out = mode_messages_for_api(messages, "think")
    assert out[1]["content"].endswith("start your reply with <think>.")
    assert messages[1]["content"] != out[1]["content"]  # original untouched


def test_chat_template_masks_only_assistant_tokens(tiny_model_dir):
    from transformers import AutoTokenizer

    from training.format import render_prompt

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert tok.chat_template == GUARDIAN_CHAT_TEMPLATE
    row = {"policy": "1. x", "transcript": "User: a\nAgent: b", "label": "PASS", "explanation": "fine"}
    messages = sft_messages(row, "answer")
    enc = tok.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    kept = [i for i, m in zip(enc["input_ids"], enc["assistant_masks"], strict=True) if m]
    assert tok.decode(kept) == messages[-1]["content"] + "<|im_end|>"
    prompt = render_prompt(tok, messages[:2], "answer")
    assert prompt.endswith("<|im_start|>assistant\n<answer>")
    # the prefill is a single token, so prompt tokens are a prefix of prompt+target tokens
    full = tok(prompt + "PASS</answer>", add_special_tokens=False)["input_ids"]
    assert (
        full[: len(tok(prompt, add_special_tokens=False)["input_ids"])]
        == tok(prompt, add_special_tokens=False)["input_ids"]
    )


def test_build_sft_dataset_modes_and_overlong_rows(tiny_model_dir):
    from datasets import Dataset
    from transformers import AutoTokenizer

    from tests.training.fixtures import make_rows
    from training.sft import build_sft_dataset

    rows = Dataset.from_list(make_rows(30))
    ds, stats = build_sft_dataset(rows, think_fraction=1 / 3, seed=1)
    assert ds.column_names == ["messages"] and stats["modes"]["think"] == 10
    expected = sum(1 for r in rows if r["trace_mode"] == "think" and r["reasoning"])
    _, stats = build_sft_dataset(rows, mode_source="column")
    assert stats["modes"].get("think", 0) == expected
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    lengths = [
        len(tok.apply_chat_template(m, tokenize=True, return_dict=True)["input_ids"])
        for m in build_sft_dataset(rows, 0.0)[0]["messages"]
    ]
    cut = sorted(lengths)[len(lengths) // 2]
    ds, stats = build_sft_dataset(rows, 0.0, tokenizer=tok, max_length=cut)
    assert stats["dropped_overlong"] == sum(n > cut for n in lengths) > 0
    assert len(ds) == stats["kept"] == 30 - stats["dropped_overlong"]


def test_dpo_label_flip_handles_the_dynaguard_layout():
    from training.dpo import label_flip_pairs

    class _Tok:
        def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
            return "|".join(m["content"] for m in messages)

    row = {
        "sample_id": "s1",
        "policy": "1. x",
        "transcript": "",
        "turns": [{"role": "user", "content": "a"}, {"role": "agent", "content": "b"}],
        "label": "FAIL",
        "reasoning": "r",
        "explanation": "e",
    }
    (pair,), _ = label_flip_pairs([row], _Tok(), ["answer"])
    assert pair["chosen"] == "\nFAIL\n</answer>\n<explanation>\ne\n</explanation>"
    assert pair["rejected"] == "\nPASS\n</answer>\n<explanation>\ne\n</explanation>"
    assert "<rules>\n1. x\n</rules>" in pair["prompt"]
