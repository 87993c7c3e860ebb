"""Agreement statistics against hand-computed cases."""

import pytest

from annotation.stats import cohen_kappa, confusion, fleiss_kappa, pairwise_agreement, percent_agreement


def test_perfect_agreement():
    a = ["FAIL", "PASS", "FAIL", "PASS"]
    assert percent_agreement(a, a) == 1.0
    assert cohen_kappa(a, a) == 1.0
    assert fleiss_kappa([["FAIL", "FAIL"], ["PASS", "PASS"]]) == 1.0


def test_total_disagreement():
    a = ["FAIL", "PASS", "FAIL", "PASS"]
    b = ["PASS", "FAIL", "PASS", "FAIL"]
    assert percent_agreement(a, b) == 0.0
    # p_o = 0, p_e = 0.5*0.5 + 0.5*0.5 = 0.5 -> kappa = -1
    assert cohen_kappa(a, b) == -1.0
    # two items, each 1 FAIL + 1 PASS: P_i = (1+1-2)/2 = 0; p = (0.5, 0.5), P_e = 0.5 -> -1
    assert fleiss_kappa([["FAIL", "PASS"], ["PASS", "FAIL"]]) == -1.0


def test_mixed_case():
    # 10 items: both FAIL 4, both PASS 3, LLM FAIL/human PASS 2, LLM PASS/human FAIL 1
    llm = ["FAIL"] * 4 + ["PASS"] * 3 + ["FAIL"] * 2 + ["PASS"]
    hum = ["FAIL"] * 4 + ["PASS"] * 3 + ["PASS"] * 2 + ["FAIL"]
    assert percent_agreement(llm, hum) == pytest.approx(0.7)
    # p_e = 0.6*0.5 + 0.4*0.5 = 0.5 -> kappa = (0.7 - 0.5) / 0.5 = 0.4
    assert cohen_kappa(llm, hum) == pytest.approx(0.4)
    assert confusion(llm, hum, ["FAIL", "PASS"]) == {
        "FAIL": {"FAIL": 4, "PASS": 2},
        "PASS": {"FAIL": 1, "PASS": 3},
    }


def test_fleiss_mixed_three_raters():
    # items: [F,F,F] P_i=1; [F,F,P] P_i=(4+1-3)/6=1/3; [P,P,P] P_i=1 -> P_bar=7/9
    # totals F=5, P=4 of 9: P_e = 25/81 + 16/81 = 41/81 -> kappa = (7/9 - 41/81)/(40/81) = 22/40
    items = [["FAIL"] * 3, ["FAIL", "FAIL", "PASS"], ["PASS"] * 3]
    assert fleiss_kappa(items) == pytest.approx(22 / 40)
    assert pairwise_agreement(items) == pytest.approx(7 / 9)


def test_undefined_cases():
    assert percent_agreement([], []) is None
    assert cohen_kappa([], []) is None
    assert cohen_kappa(["PASS", "PASS"], ["PASS", "PASS"]) is None  # p_e = 1
    assert fleiss_kappa([["PASS"]]) is None
    with pytest.raises(ValueError):
        percent_agreement(["PASS"], [])
