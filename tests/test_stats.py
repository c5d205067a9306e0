"""lorsp.stats: the paired verdict rule, checked by simulation and branch by branch."""
from __future__ import annotations

import math

import numpy as np
import pytest

from lorsp.stats import FamilyVerdict, PairedVerdict, holm_adjust, holm_verdict, paired_verdict

TRIALS = 1000


def _monte_carlo_bound(rate: float, trials: int) -> float:
    """``rate`` plus three Monte Carlo standard errors."""
    return rate + 3 * math.sqrt(rate * (1 - rate) / trials)


def _seeded_accuracies(rng, seeds: int, difference: float, seed_sd: float, noise_sd: float):
    """Per-seed accuracies (pp) of two methods: a seed effect shared by both (same data subset, same head
    initialisation), plus each method's own noise; ``a`` is better by ``difference`` on average."""
    shared = 60.0 + rng.normal(0.0, seed_sd, seeds)
    return (shared + difference + rng.normal(0.0, noise_sd, seeds),
            shared + rng.normal(0.0, noise_sd, seeds))


# --- simulation ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seeds", [2, 3, 5])
def test_equal_methods_rarely_get_a_direction(seeds):
    rng = np.random.default_rng(seeds)
    decided = sum(paired_verdict(*_seeded_accuracies(rng, seeds, 0.0, 2.0, 1.0)).verdict in ("holds", "reversed")
                  for _ in range(TRIALS))
    assert decided / TRIALS <= _monte_carlo_bound(0.05, TRIALS)


def test_a_one_point_difference_holds_at_five_seeds():
    rng = np.random.default_rng(7)
    # paired differences have std 0.3 pp (noise 0.3/√2 per method); the shared seed effect is large (2 pp)
    holds = sum(paired_verdict(*_seeded_accuracies(rng, 5, 1.0, 2.0, 0.3 / math.sqrt(2))).verdict == "holds"
                for _ in range(TRIALS))
    assert holds / TRIALS >= 0.80


def test_holm_keeps_the_family_wise_rate_over_three_equal_rivals():
    rng = np.random.default_rng(11)
    wrong = 0
    for _ in range(TRIALS):
        shared = 60.0 + rng.normal(0.0, 2.0, 3)
        best = shared + rng.normal(0.0, 1.0, 3)
        family = holm_verdict({f"rival {k}": (best, shared + rng.normal(0.0, 1.0, 3)) for k in range(3)})
        wrong += any(p.verdict in ("holds", "reversed") for p in family.pairs)
    assert wrong / TRIALS <= _monte_carlo_bound(0.05, TRIALS)


# --- each branch -------------------------------------------------------------------------------------------
def test_holds_reversed_equivalent_inconclusive():
    a = [61.0, 62.0, 60.5, 61.5, 62.5]
    b = [60.0, 60.8, 59.6, 60.2, 61.4]
    holds = paired_verdict(a, b)
    assert holds.verdict == "holds" and holds.ci[0] > 0 and holds.n == 5
    assert holds.difference == pytest.approx(np.mean(np.subtract(a, b)))
    reversed_ = paired_verdict(b, a)
    assert reversed_.verdict == "reversed" and reversed_.ci[1] < 0
    assert reversed_.difference == pytest.approx(-holds.difference)
    close = paired_verdict([60.0, 60.1, 59.9, 60.05], [60.02, 60.0, 59.95, 60.0])
    assert close.verdict == "equivalent" and -0.5 <= close.ci[0] and close.ci[1] <= 0.5
    noisy = paired_verdict([60.0, 63.0, 58.0], [61.0, 60.0, 60.5])
    assert noisy.verdict == "inconclusive" and noisy.ci[0] < 0 < noisy.ci[1] and not noisy.reason
    # the same numbers are equivalent under a margin wide enough to hold the interval
    assert paired_verdict([60.0, 63.0, 58.0], [61.0, 60.0, 60.5], margin=20).verdict == "equivalent"


def test_interval_and_detectable_match_the_t_distribution():
    from scipy import stats
    a, b = [70.0, 71.0, 69.5, 70.5], [69.0, 69.5, 69.0, 70.0]
    d = np.subtract(a, b)
    result = paired_verdict(a, b, level=0.90)
    se = d.std(ddof=1) / 2
    t = stats.t.ppf(0.95, 3)
    assert result.ci == pytest.approx((d.mean() - t * se, d.mean() + t * se))
    assert result.detectable == pytest.approx((t + stats.t.ppf(0.80, 3)) * se)
    assert result.p_value == pytest.approx(stats.ttest_rel(a, b).pvalue)
    low, high = stats.t.sf((d.mean() + 0.5) / se, 3), stats.t.cdf((d.mean() - 0.5) / se, 3)
    assert result.p_equivalence == pytest.approx(max(low, high))
    assert isinstance(result, PairedVerdict) and result.level == 0.90 and "90% CI" in result.describe()


def test_one_seed_is_inconclusive_with_a_reason():
    result = paired_verdict([70.0], [50.0])
    assert result.verdict == "inconclusive" and result.difference == 20.0 and result.n == 1
    assert "one seed" in result.reason and math.isnan(result.ci[0]) and math.isnan(result.detectable)
    assert paired_verdict([], []).verdict == "inconclusive"


def test_identical_differences_are_inconclusive_not_certain():
    # two seeds, each +0.5 pp (a 200-image test set moves in steps of 0.5 pp): the t-interval is a point
    result = paired_verdict([60.5, 58.0], [60.0, 57.5])
    assert result.verdict == "inconclusive" and result.ci == (0.5, 0.5) and result.difference == 0.5
    assert "no spread" in result.reason and math.isnan(result.p_value) and math.isnan(result.detectable)
    same = paired_verdict([60.0, 58.0, 59.0], [60.0, 58.0, 59.0])
    assert same.verdict == "inconclusive" and same.difference == 0.0
    # in a family the degenerate pair decides nothing either
    family = holm_verdict({"flat": ([60.5, 58.0], [60.0, 57.5])})
    assert family.pairs[0].verdict == "inconclusive" and family.verdict == "inconclusive"


@pytest.mark.parametrize("a, b, name", [([1.0, 2.0, 3.0], [1.0, 2.0], "a has 3 values and b has 2"),
                                        ([1.0, float("nan")], [1.0, 2.0], "a has non-finite"),
                                        ([1.0, 2.0], [1.0, float("inf")], "b has non-finite"),
                                        ([[1.0, 2.0]], [[1.0, 2.0]], "a must be one-dimensional"),
                                        (["x", "y"], [1.0, 2.0], "a must be a sequence")])
def test_bad_input_names_the_argument(a, b, name):
    with pytest.raises(ValueError, match=name):
        paired_verdict(a, b)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="margin"):
        paired_verdict([1.0, 2.0], [1.0, 2.0], margin=-1)
    with pytest.raises(ValueError, match="level"):
        paired_verdict([1.0, 2.0], [1.0, 2.0], level=95)
    with pytest.raises(ValueError, match="at least one pair"):
        holm_verdict({})
    with pytest.raises(ValueError, match="pair 'LoRSP vs LP': a has 2 values"):
        holm_verdict({"LoRSP vs LP": ([1.0, 2.0], [1.0])})


# --- Holm ----------------------------------------------------------------------------------------------
def test_holm_adjust_step_down():
    assert holm_adjust([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm_adjust([0.2, float("nan")]) == pytest.approx([0.4, 1.0])
    assert holm_adjust([0.5, 0.6]) == pytest.approx([1.0, 1.0])


def test_one_pair_family_is_the_paired_verdict():
    rng = np.random.default_rng(3)
    for _ in range(50):
        a, b = _seeded_accuracies(rng, 4, rng.normal(0, 1), 1.0, 0.5)
        assert holm_verdict({"p": (a, b)}).pairs[0].verdict == paired_verdict(a, b).verdict


def test_holm_combines_pairs():
    strong = ([62.0, 63.0, 61.5, 62.5, 63.2], [60.0, 60.9, 59.6, 60.2, 61.4])
    equal = ([60.0, 60.1, 59.9, 60.05, 60.0], [60.02, 60.0, 59.95, 60.0, 60.03])
    noisy = ([60.0, 63.0, 58.0, 61.0, 59.0], [61.0, 60.0, 60.5, 59.0, 61.0])
    assert holm_verdict({"x": strong, "y": strong}).verdict == "holds"
    assert holm_verdict({"x": strong, "y": strong[::-1]}).verdict == "reversed"
    assert holm_verdict({"x": equal, "y": equal}).verdict == "equivalent"
    mixed = holm_verdict({"x": strong, "y": noisy, "z": equal})
    assert isinstance(mixed, FamilyVerdict) and mixed.verdict == "inconclusive"
    assert [p.verdict for p in mixed.pairs] == ["holds", "inconclusive", "equivalent"]
    assert mixed.counts() == {"holds": 1, "inconclusive": 1, "equivalent": 1}
    # Holm is stricter than each pair alone: a pair significant on its own can lose it in a family
    alone = ([61.0, 60.6, 61.4, 60.1], [60.0, 59.9, 60.2, 59.8])   # p = 0.026
    assert paired_verdict(*alone).verdict == "holds"
    assert 0.05 / 3 < paired_verdict(*alone).p_value < 0.05
    family = holm_verdict({"a": alone, "b": noisy, "c": noisy})
    assert family.pairs[0].verdict != "holds" and family.pairs[0].p_adjusted > 0.05
