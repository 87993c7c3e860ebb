"""Agreement statistics, computed here (Argilla 2.x has none). Pure functions over label lists.

>>> percent_agreement(["FAIL", "PASS"], ["FAIL", "FAIL"])
0.5
>>> cohen_kappa(["FAIL", "PASS"], ["FAIL", "PASS"])
1.0
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence


def percent_agreement(a: Sequence[str], b: Sequence[str]) -> float | None:
    """Share of items on which the two raters give the same label; None for no items."""
    if len(a) != len(b):
        raise ValueError("percent_agreement: the two label lists differ in length")
    if not a:
        return None
    return sum(x == y for x, y in zip(a, b, strict=True)) / len(a)


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> float | None:
    """Cohen's kappa of two raters over the same items: (p_o - p_e) / (1 - p_e).

    None when it is undefined: no items, or chance agreement p_e = 1 (both raters used one and
    the same single category throughout)."""
    po = percent_agreement(a, b)
    if po is None:
        return None
    n = len(a)
    ca, cb = Counter(a), Counter(b)
    pe = sum(ca[k] * cb[k] for k in ca.keys() | cb.keys()) / (n * n)
    if pe >= 1.0:
        return None
    return (po - pe) / (1 - pe)


def fleiss_kappa(items: Sequence[Sequence[str]]) -> float | None:
    """Fleiss' kappa over items rated by two or more raters each (the number may vary per item).

    For item i with n_i ratings and n_ij of them in category j: P_i = (sum_j n_ij^2 - n_i) /
    (n_i (n_i - 1)); P_bar is the mean of P_i; p_j = sum_i n_ij / sum_i n_i; P_e = sum_j p_j^2;
    kappa = (P_bar - P_e) / (1 - P_e). Items with fewer than two ratings are skipped. None when
    no item has two ratings or P_e = 1."""
    rated = [list(r) for r in items if len(r) >= 2]
    if not rated:
        return None
    totals: Counter[str] = Counter()
    p_items = []
    for ratings in rated:
        counts = Counter(ratings)
        totals.update(counts)
        n = len(ratings)
        p_items.append((sum(c * c for c in counts.values()) - n) / (n * (n - 1)))
    p_bar = sum(p_items) / len(p_items)
    all_n = sum(totals.values())
    pe = sum((c / all_n) ** 2 for c in totals.values())
    if pe >= 1.0:
        return None
    return (p_bar - pe) / (1 - pe)


def pairwise_agreement(items: Sequence[Sequence[str]]) -> float | None:
    """Observed agreement among raters: the share of agreeing rater pairs, over items with >= 2 ratings."""
    agree = pairs = 0
    for ratings in items:
        r = list(ratings)
        for i in range(len(r)):
            for j in range(i + 1, len(r)):
                pairs += 1
                agree += r[i] == r[j]
    return agree / pairs if pairs else None


def confusion(llm: Sequence[str], human: Sequence[str], labels: Sequence[str]) -> dict[str, dict[str, int]]:
    """{llm_label: {human_label: count}} over the given label set (rows: LLM, columns: human)."""
    out = {x: dict.fromkeys(labels, 0) for x in labels}
    for x, y in zip(llm, human, strict=True):
        out.setdefault(x, dict.fromkeys(labels, 0))
        out[x][y] = out[x].get(y, 0) + 1
    return out
