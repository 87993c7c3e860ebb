"""The real TRL trainers on CPU with the tiny offline model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.training.conftest import CPU_TINY
from training.common import logged_values
from training.config import load_run_config


def _history(run: Path) -> list[dict]:
    return json.loads((run / "log_history.json").read_text())


def test_sft_loss_falls_and_targets_are_dual_mode(sft_run):
    losses = logged_values(_history(sft_run), "loss")
    assert len(losses) >= 5
    assert losses[-1] < 0.6 * losses[0], losses
    summary = json.loads((sft_run / "summary.json").read_text())
    modes = summary["data"]["modes"]
    assert modes["think"] == round(48 / 3)  # exactly one third of the 48 rows
    assert modes["answer"] == 48 - modes["think"]
    assert (sft_run / "run_config.yaml").is_file()
    assert sorted(p.name for p in (sft_run / "checkpoints").glob("checkpoint-*")) == [
        "checkpoint-15",
        "checkpoint-30",
    ]


def test_merged_model_reloads_and_generates_in_both_modes(sft_run, export_dir):
    from transformers import AutoModelForCausalLM

    from training.data import load_split
    from training.evaluate import HFPredictor, evaluate
    from training.format import build_prompt_messages

    final = sft_run / "final"
    model = AutoModelForCausalLM.from_pretrained(final)
    assert model.config.model_type == "qwen3"
    predictor = HFPredictor(str(final), batch_size=4, max_new_tokens=24, torch_threads=1)
    rows = list(load_split(export_dir, "test", limit=4))
    messages = [build_prompt_messages(r, template="factory") for r in rows]  # cpu_tiny trains `factory`
    for mode, tag in (("think", "<think>"), ("answer", "<answer>")):
        outputs = predictor.predict(messages, mode)
        assert len(outputs) == 4
        assert all(o.startswith(tag) and len(o) > len(tag) for o in outputs), outputs
    # After 30 steps the fast mode already emits a readable verdict.
    report = evaluate(predictor, rows, mode="answer", batch_size=4, template="factory")
    assert report.overall.unparseable_rate < 1.0


def test_grpo_sees_reward_variance(sft_run, export_dir, tmp_path):
    from training.grpo import run_grpo

    config = load_run_config(
        "grpo", CPU_TINY, model=str(sft_run / "final"), data=str(export_dir), out=str(tmp_path / "grpo")
    )
    final = run_grpo(config)
    history = _history(tmp_path / "grpo")
    stds = logged_values(history, "reward_std")
    assert len(stds) == config.max_steps
    assert max(stds) > 0.0, stds
    assert any(k.startswith("rewards/correctness_reward") for k in history[0])
    assert (final / "config.json").is_file()


def test_dpo_hard_mining_and_loss_moves(sft_run, export_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from training.dpo import run_dpo

    out = tmp_path / "dpo"
    config = load_run_config(
        "dpo", CPU_TINY, model=str(sft_run / "final"), data=str(export_dir), out=str(out)
    )
    final = run_dpo(config)
    summary = json.loads((out / "summary.json").read_text())["pairs"]
    assert summary["hard_inputs"] > 0 and summary["pairs"] >= summary["hard_inputs"]
    pairs = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    for p in pairs:  # one pair per wrong sample: harder inputs contribute more pairs
        assert sum(q["sample_id"] == p["sample_id"] for q in pairs) == p["num_wrong"]
        assert p["hardness"] == pytest.approx(p["num_wrong"] / config.k)
    losses = logged_values(_history(out), "loss")
    assert len(losses) == config.max_steps
    assert losses[0] == pytest.approx(0.6931, abs=1e-3)  # log(2): policy == reference at step 1
    assert max(abs(v - losses[0]) for v in losses[1:]) > 1e-3, losses
    AutoModelForCausalLM.from_pretrained(final)


def test_dpo_label_flip_pairs(sft_run, export_dir, tmp_path):
    from training.dpo import run_dpo
    from training.format import PREFILL, parse_label

    out = tmp_path / "dpo_flip"
    config = load_run_config(
        "dpo",
        CPU_TINY,
        model=str(sft_run / "final"),
        data=str(export_dir),
        out=str(out),
        hard=False,
        mode="think",
        max_steps=2,
        limit=8,
    )
    run_dpo(config)
    pairs = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert len(pairs) == 8
    assert {p["mode"] for p in pairs} == {"think", "answer"}  # rows without a trace fall back to answer
    for p in pairs:
        flipped = "PASS" if p["label"] == "FAIL" else "FAIL"
        chosen, rejected = PREFILL[p["mode"]] + p["chosen"], PREFILL[p["mode"]] + p["rejected"]
        assert parse_label(chosen) == p["label"] and parse_label(rejected) == flipped
        assert chosen.replace(f"<answer>{p['label']}<", f"<answer>{flipped}<") == rejected


def test_sft_resume_from_checkpoint(tiny_model_dir, export_dir, tmp_path):
    from training.sft import run_sft

    out = tmp_path / "resume"
    common = dict(model=str(tiny_model_dir), data=str(export_dir), out=str(out), save_steps=4, limit=16)
    run_sft(load_run_config("sft", CPU_TINY, max_steps=4, logging_steps=1, **common))
    state_file = out / "checkpoints" / "checkpoint-4" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state["log_history"].append({"step": 4, "marker": "restored-from-checkpoint"})
    state_file.write_text(json.dumps(state))
    run_sft(
        load_run_config("sft", CPU_TINY, max_steps=6, logging_steps=1, resume_from_checkpoint=True, **common)
    )
    history = _history(out)
    marker = next(i for i, e in enumerate(history) if e.get("marker") == "restored-from-checkpoint")
    new_steps = [e["step"] for e in history[marker + 1 :] if "loss" in e]
    assert new_steps and min(new_steps) == 5 and max(new_steps) == 6  # continued at step 5, no restart


def test_lora_sft_adds_tokens_and_saves_a_merged_model(export_dir, tmp_path):
    """A model whose tokenizer lacks the guardian tags (like a Hub base model): the tags are
    added, embeddings grow and are initialised, and OUT/final is a plain merged model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training.data import load_split
    from training.format import GUARDIAN_TAGS
    from training.sft import run_sft
    from training.tiny_model import build_tiny_model, corpus_from_rows

    base = build_tiny_model(
        tmp_path / "bare", corpus_from_rows(load_split(export_dir, "train")), guardian_tokens=False
    )
    assert "<answer>" not in AutoTokenizer.from_pretrained(base).get_vocab()
    out = tmp_path / "lora"
    config = load_run_config(
        "sft",
        CPU_TINY,
        model=str(base),
        data=str(export_dir),
        out=str(out),
        lora=True,
        max_steps=3,
        limit=12,
        learning_rate=1e-3,
    )
    final = run_sft(config)
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert not (final / "adapter_config.json").exists()
    tok = AutoTokenizer.from_pretrained(final)
    model = AutoModelForCausalLM.from_pretrained(final)
    assert all(t in tok.get_vocab() for t in GUARDIAN_TAGS)
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    assert (out / "prepared_model" / "config.json").is_file()  # the base the adapter applies to
    # added tags start from the mean of their former pieces, so they are distinct rows
    emb = model.get_input_embeddings().weight
    ids = tok.convert_tokens_to_ids(list(GUARDIAN_TAGS))
    assert len({tuple(emb[i].tolist()) for i in ids}) == len(ids)
    from training.evaluate import HFPredictor

    out_text = HFPredictor(str(final), max_new_tokens=5).predict(
        [[{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]], "answer"
    )
    assert out_text[0].startswith("<answer>")
