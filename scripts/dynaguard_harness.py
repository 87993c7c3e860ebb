"""Run the DynaGuard authors' evaluation harness (github montehoover/DynaGuard, `eval.py`) on an
export's jsonl test split with the harness's default flags, the model replaced by a stub.

    python3.12 scripts/dynaguard_harness.py /path/to/DynaGuard-checkout EXPORT/jsonl/test.jsonl

Nothing of theirs is copied here or fetched: the checkout is yours to provide. Their eval.py needs
Python 3.12 (nested quotes in f-strings) and datasets, numpy, scikit-learn, pyyaml, pandas and
matplotlib; torch, transformers, peft, vLLM, litellm and python-dotenv are only needed for real
generation, so this script puts small stand-ins for them in `sys.modules` and gives eval.py a
model wrapper whose "generation" alternates FAIL / PASS answers in the DynaGuard output layout and
whose PASS/FAIL probabilities are derived from the prompt text. Run it in a scratch folder: eval.py
writes log/ under the current directory. Standard library only on our side.
"""

from __future__ import annotations

import hashlib
import sys
import types


class _Tokenizer:
    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [int(hashlib.sha256(text.encode()).hexdigest()[:6], 16)]


class StubModel:
    """What eval.py calls on its model wrapper: apply_chat_template, get_responses,
    get_prediction_probs and tokenizer.encode."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.tokenizer = _Tokenizer()
        self.calls = 0

    def apply_chat_template(self, system: str, user: str | None = None, enable_thinking: bool = True) -> str:
        return f"<system>{system}</system>\n<user>{user or ''}</user>\n"

    def get_responses(self, messages: list[str], logit_bias_dict: object = None) -> list[str]:
        self.calls += 1
        labels = ("FAIL", "PASS")
        return [
            f"<think>\nstub reasoning {i}\n</think>\n<answer>\n{labels[i % 2]}\n</answer>\n"
            for i in range(len(messages))
        ]

    def get_prediction_probs(self, messages: list[str], pos_label: str, neg_label: str) -> tuple[list, None]:
        pairs = []
        for m in messages:
            p = int(hashlib.sha256(m.encode()).hexdigest()[:8], 16) / 16**8
            pairs.append((p, 1 - p))
        return pairs, None  # vLLM wrappers give no logits


def _stub(name: str, **attrs: object) -> None:
    module = types.ModuleType(name)
    for key, value in attrs.items():
        setattr(module, key, value)
    sys.modules[name] = module


def main(repo: str, data: str) -> None:
    # the real libraries first: datasets and friends probe for torch/transformers at import time
    import datasets  # noqa: F401
    import matplotlib  # noqa: F401
    import numpy  # noqa: F401
    import pandas  # noqa: F401
    import sklearn.metrics  # noqa: F401
    import yaml  # noqa: F401

    _stub("torch")
    _stub("peft", PeftModel=object)
    _stub("transformers", AutoModelForCausalLM=object, AutoTokenizer=object)
    _stub("dotenv", load_dotenv=lambda *a, **k: None, find_dotenv=lambda *a, **k: "")
    _stub(
        "model_wrappers",
        HfModelWrapper=StubModel,
        VllmModelWrapper=StubModel,
        ApiModelWrapper=StubModel,
        BatchApiModelWrapper=StubModel,
    )
    sys.path.insert(0, repo)
    import eval as harness  # their eval.py

    # datasets inspects torch / transformers types once they are in sys.modules: take the
    # stand-ins out again (their main path with a stubbed model does not use them)
    for name in ("torch", "transformers", "peft"):
        sys.modules.pop(name, None)

    sys.argv = ["eval.py", "--dataset_path", data]  # every other flag at its default
    harness.main(harness.parse_args())
    print("DYNAGUARD HARNESS FINISHED")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
