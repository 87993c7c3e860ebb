"""Predictors: anything that can act as a guardian, the local transformers one, and the
``--model SCHEME:NAME`` registry (:func:`register_predictor`, :func:`make_predictor`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from training.format import GUARDIAN_CHAT_TEMPLATE, IM_START, MODES, PREFILL, render_prompt


@runtime_checkable
class Predictor(Protocol):
    """Anything that can act as a guardian.

    ``predict`` receives a batch of conversations (each ``[system, user]`` messages as built by
    :func:`training.format.build_prompt_messages`) and the mode (``"think"`` or ``"answer"``)
    and returns one assistant text per conversation. The text may start with the mode's tag or
    omit it (a model that was prefilled with ``<answer>`` usually returns only what follows);
    the evaluator parses both. Predictors that cannot prefill can add the instruction from
    :func:`training.format.mode_messages_for_api`.
    """

    def predict(self, messages_batch: list[list[dict[str, str]]], mode: str) -> list[str]: ...


DEFAULT_MAX_NEW_TOKENS = {"think": 1024, "answer": 160}


class HFPredictor:
    """Local transformers model: greedy decoding, batched, prompt prefilled with the mode tag."""

    def __init__(
        self,
        model_path: str,
        batch_size: int = 8,
        max_new_tokens: int | dict[str, int] | None = None,
        device: str | None = None,
        torch_threads: int | None = None,
        dtype: str = "auto",
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.model_path = model_path
        self.batch_size = batch_size
        if isinstance(max_new_tokens, int):
            self.max_new_tokens = {m: max_new_tokens for m in MODES}
        else:
            self.max_new_tokens = {**DEFAULT_MAX_NEW_TOKENS, **(max_new_tokens or {})}
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        if self.tokenizer.chat_template is None and IM_START in self.tokenizer.get_vocab():
            self.tokenizer.chat_template = GUARDIAN_CHAT_TEMPLATE
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        torch_dtype = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16}.get(
            dtype, "auto"
        )
        if device == "cpu" and dtype == "auto":
            torch_dtype = torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype).to(device)
        self.model.eval()
        self.sampling: dict[str, Any] = {}  # empty: greedy

    def set_sampling(self, temperature: float, top_k: int | None, run: int) -> None:
        """Sample (temperature > 0, top-k) instead of greedy decoding; seeded per run."""
        import torch

        torch.manual_seed(run)
        self.sampling = (
            {"do_sample": True, "temperature": temperature, "top_k": top_k or 0} if temperature > 0 else {}
        )

    def render(self, messages: list[dict[str, str]], mode: str) -> str:
        return render_prompt(self.tokenizer, messages, mode)

    def fail_scores(
        self, messages_batch: list[list[dict[str, str]]], continuations: dict[str, str]
    ) -> list[float]:
        """P(FAIL) per conversation from the answer-token logits: the prompt prefilled with
        ``<answer>`` is scored with each verdict's continuation (``continuations``, e.g.
        ``{"FAIL": "\\nFAIL", "PASS": "\\nPASS"}`` for the DynaGuard layout) by teacher forcing,
        and P(FAIL) = p(FAIL) / (p(FAIL) + p(PASS)) over the two sequence probabilities."""
        return fail_probabilities(
            self.model,
            self.tokenizer,
            [self.render(m, "answer") for m in messages_batch],
            continuations,
            self.batch_size,
        )

    def predict(self, messages_batch: list[list[dict[str, str]]], mode: str) -> list[str]:
        from training.generation import generate_continuations

        prompts = [self.render(m, mode) for m in messages_batch]
        outputs = generate_continuations(
            self.model,
            self.tokenizer,
            prompts,
            max_new_tokens=self.max_new_tokens[mode],
            batch_size=self.batch_size,
            **self.sampling,
        )
        return [PREFILL[mode] + texts[0] for texts in outputs]


def fail_probabilities(
    model: Any, tokenizer: Any, prompts: list[str], continuations: dict[str, str], batch_size: int = 8
) -> list[float]:
    """P(FAIL) for each rendered prompt: softmax over the summed log-probabilities of the FAIL and
    PASS continuations (see :meth:`HFPredictor.fail_scores`)."""
    import torch

    device = next(model.parameters()).device
    labels = ("FAIL", "PASS")
    seqs: list[tuple[list[int], int]] = []  # (token ids, length of the prompt part)
    for prompt in prompts:
        p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        for label in labels:
            full = tokenizer(prompt + continuations[label], add_special_tokens=False)["input_ids"]
            if full[: len(p_ids)] != p_ids:  # the boundary merged: tokenize the parts apart
                full = p_ids + tokenizer(continuations[label], add_special_tokens=False)["input_ids"]
            seqs.append((full, len(p_ids)))
    logps: list[float] = []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    step = max(1, batch_size) * 2
    with torch.inference_mode():
        for start in range(0, len(seqs), step):
            chunk = seqs[start : start + step]
            width = max(len(ids) for ids, _ in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, (toks, _) in enumerate(chunk):  # right padding: positions stay as in training
                ids[i, : len(toks)] = torch.tensor(toks)
                mask[i, : len(toks)] = 1
            out = model(input_ids=ids.to(device), attention_mask=mask.to(device))
            logprobs = torch.log_softmax(out.logits.float(), dim=-1).cpu()
            for i, (toks, n_prompt) in enumerate(chunk):
                total = 0.0
                for pos in range(n_prompt, len(toks)):  # token at pos is predicted at pos - 1
                    total += float(logprobs[i, pos - 1, toks[pos]])
                logps.append(total)
    out_scores = []
    for k in range(len(prompts)):
        lf, lp = logps[2 * k], logps[2 * k + 1]
        top = max(lf, lp)
        ef, ep = math.exp(lf - top), math.exp(lp - top)
        out_scores.append(ef / (ef + ep))
    return out_scores


#: Factories for ``--model SCHEME:NAME`` (e.g. an LLM-API backed predictor registered by the
#: project's LLM layer). A model argument without a registered scheme is a local directory or
#: Hub name loaded with :class:`HFPredictor`.
PREDICTOR_FACTORIES: dict[str, Callable[..., Predictor]] = {}


def register_predictor(scheme: str, factory: Callable[..., Predictor]) -> None:
    """Register ``factory(name: str, **options) -> Predictor`` for ``--model scheme:name``."""
    PREDICTOR_FACTORIES[scheme] = factory


def make_predictor(model: str, **options: Any) -> Predictor:
    scheme, sep, rest = model.partition(":")
    if sep and scheme in PREDICTOR_FACTORIES:
        return PREDICTOR_FACTORIES[scheme](rest, **options)
    return HFPredictor(model, **options)
