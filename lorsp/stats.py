"""The verdict rule of the book's claims: a paired t-interval over seeds, and Holm's rule over several pairs.

A claim of the paper says that method A beats method B (Tables II–VI). We train both with the same seeds
(same data subset, same initialisation of the head), so the seeds pair the runs: the evidence is the per-seed
paired difference ``d_i = a_i − b_i`` in percentage points (pp). For one pair, :func:`paired_verdict`:

- ``difference`` = mean of the d_i; ``ci`` = its two-sided ``level`` (95 %) t-interval,
  ``mean ± t_{1−α/2, n−1} · s_d / √n``, α = 1 − level (Student's t from scipy: ``scipy.special.stdtrit`` /
  ``stdtr``, the ufuncs behind ``scipy.stats.t.ppf`` / ``.cdf``, fast enough for the simulation tests);
- verdict, checked in this order: **holds** when the interval lies above zero, **reversed** when below zero,
  **equivalent** when it lies inside ``[−margin, +margin]`` (default ±0.5 pp; the interval inside the margin
  is the two one-sided tests, TOST, at α/2 each), otherwise **inconclusive**;
- ``detectable`` = the smallest true difference these seeds would detect (interval above zero) with 80 %
  power, from the observed spread: ``(t_{1−α/2, n−1} + t_{0.80, n−1}) · s_d / √n`` (the usual minimal
  detectable effect of a paired t-test, with the noncentral t approximated by a shifted central t). A
  difference smaller than this may exist and go unseen; "inconclusive" says no more than that.

Degenerate cases. Fewer than two seeds: there is no spread to build an interval from, the verdict is
*inconclusive* (reason given). All paired differences identical (zero spread, e.g. accuracies on a small
test set move in steps of 100 / test images, or two methods make the same predictions): the t-interval would
be the single point ``difference``, and reading it literally would call any difference certain — exactly the
flaw of a rule that compares with a standard deviation of zero. The t-interval's coverage rests on
estimating the spread, and a spread of exactly zero estimates nothing, so the verdict is *inconclusive*
with that reason; ``ci`` is reported as the point ``(difference, difference)``, ``detectable`` and
``p_value`` are NaN. More seeds (or a larger test set) resolve it.

Several pairs (a claim "A beats B, C and D"): :func:`holm_verdict` tests each pair with the two-sided paired
t-test (``p_value``, the same number as ``scipy.stats.ttest_rel(a, b).pvalue``; checked in the tests) and adjusts the p-values with Holm's step-down rule, which keeps the
chance of any false "holds"/"reversed" in the family at α. A pair *holds* / is *reversed* when its
Holm-adjusted p ≤ α (sign of the difference); otherwise it is *equivalent* when its TOST p-value (the larger
of the two one-sided p-values against ±margin), Holm-adjusted over the family the same way, is ≤ α/2; else
*inconclusive*. With one pair this is exactly :func:`paired_verdict`. The claim *holds* when every pair holds,
is *reversed* when any pair is reversed, *equivalent* when every pair is equivalent, and *inconclusive*
otherwise (the per-pair verdicts say which).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from scipy import special as _special

__all__ = ["VERDICTS", "PairedVerdict", "HolmPair", "FamilyVerdict", "paired_verdict", "holm_verdict",
           "holm_adjust", "detectable_difference", "POWER"]

#: the four verdicts, in the order they are checked
VERDICTS = ("holds", "reversed", "equivalent", "inconclusive")
#: the power at which ``detectable`` is computed
POWER = 0.80
#: paired differences within this many pp of their mean count as identical (float noise of a - b)
_IDENTICAL = 1e-9


@dataclass(frozen=True)
class PairedVerdict:
    """The verdict on one pair (see the module docstring): ``difference``, ``ci`` and ``detectable`` in pp."""

    verdict: str
    difference: float                 # mean paired difference a − b
    ci: tuple[float, float]           # two-sided ``level`` t-interval of the mean difference
    n: int                            # number of paired seeds
    detectable: float                 # smallest difference detectable at 80 % power (NaN when undefined)
    p_value: float                    # two-sided paired t-test (= scipy.stats.ttest_rel); NaN when degenerate
    p_equivalence: float              # TOST p-value against ±margin; NaN when degenerate
    margin: float
    level: float
    reason: str = ""                  # why the verdict is inconclusive when the test could not be made

    def describe(self, digits: int = 1) -> str:
        """``Δ = +1.2 pp, 95% CI [+0.4, +2.0], detectable ≈ 0.9 pp (5 seeds): holds``."""
        if self.n == 0:
            return f"no paired seeds: {self.verdict}"
        if self.reason:
            return f"Δ = {self.difference:+.{digits}f} pp ({_seeds(self.n)}; {self.reason}): {self.verdict}"
        low, high = self.ci
        return (f"Δ = {self.difference:+.{digits}f} pp, {100 * self.level:g}% CI [{low:+.{digits}f}, "
                f"{high:+.{digits}f}], detectable ≈ {self.detectable:.{digits}f} pp ({_seeds(self.n)}): "
                f"{self.verdict}")


@dataclass(frozen=True)
class HolmPair:
    """One pair of a family: its own test and its verdict after Holm's adjustment."""

    name: str
    test: PairedVerdict               # the pair's own interval (at ``level``, unadjusted)
    p_adjusted: float                 # Holm-adjusted p of the paired t-test (NaN → never significant)
    p_equivalence_adjusted: float     # Holm-adjusted TOST p
    verdict: str                      # after Holm


@dataclass(frozen=True)
class FamilyVerdict:
    """A claim over several pairs: each pair's verdict after Holm and the combined verdict."""

    verdict: str
    pairs: tuple[HolmPair, ...]
    margin: float
    level: float

    def counts(self) -> dict[str, int]:
        """How many pairs got each verdict (only verdicts that occur)."""
        out: dict[str, int] = {}
        for pair in self.pairs:
            out[pair.verdict] = out.get(pair.verdict, 0) + 1
        return out


def _seeds(n: int) -> str:
    return f"{n} seed" + ("" if n == 1 else "s")


def _as_values(values, name: str) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be a sequence of per-seed accuracies in percent; got {values!r}") from error
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional (one accuracy per seed); got shape {array.shape}")
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise ValueError(f"{name} has non-finite values at positions {bad.tolist()} ({array[bad].tolist()}): "
                         f"leave failed or diverged runs out of both methods before testing")
    return array


def _check_settings(margin: float, level: float) -> None:
    if not (isinstance(margin, (int, float)) and math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be a finite number of percentage points ≥ 0; got {margin!r}")
    if not (isinstance(level, (int, float)) and 0 < level < 1):
        raise ValueError(f"level must be a confidence level in (0, 1), e.g. 0.95; got {level!r}")


def paired_verdict(a: Sequence[float], b: Sequence[float], margin: float = 0.5,
                   level: float = 0.95) -> PairedVerdict:
    """Does ``a`` beat ``b``? ``a``, ``b``: per-seed accuracies in percent, in the same seed order.

    Returns a :class:`PairedVerdict` (see the module docstring for the rule, ``detectable`` and the
    degenerate cases). Raises ``ValueError`` naming ``a`` or ``b`` when the lengths differ or a value is not
    finite, and naming ``margin`` / ``level`` when they are out of range.
    """
    _check_settings(margin, level)
    a_values, b_values = _as_values(a, "a"), _as_values(b, "b")
    if len(a_values) != len(b_values):
        raise ValueError(f"a has {len(a_values)} values and b has {len(b_values)}: pass per-seed accuracies of "
                         f"the same seeds, in the same order")
    diffs = a_values - b_values
    n = len(diffs)
    mean = float(diffs.mean()) if n else float("nan")
    nan = float("nan")
    if n < 2:
        reason = "no paired seeds" if n == 0 else "one seed: a t-interval needs at least two"
        return PairedVerdict("inconclusive", mean, (nan, nan), n, nan, nan, nan, margin, level, reason)
    if float(np.max(np.abs(diffs - mean))) <= _IDENTICAL:
        return PairedVerdict("inconclusive", mean, (mean, mean), n, nan, nan, nan, margin, level,
                             f"all {n} paired differences are equal, so the seeds show no spread to build an "
                             f"interval from")
    alpha = 1.0 - level
    se = float(diffs.std(ddof=1)) / math.sqrt(n)
    critical = _t_quantile(1 - alpha / 2, n - 1)
    low, high = mean - critical * se, mean + critical * se
    detectable = (critical + _t_quantile(POWER, n - 1)) * se
    p_value = 2.0 * _t_cdf(-abs(mean / se), n - 1)      # = scipy.stats.ttest_rel(a, b).pvalue
    p_equivalence = _tost(mean, se, n, margin)
    if low > 0:
        verdict = "holds"
    elif high < 0:
        verdict = "reversed"
    elif -margin <= low and high <= margin:
        verdict = "equivalent"
    else:
        verdict = "inconclusive"
    return PairedVerdict(verdict, mean, (low, high), n, detectable, p_value, p_equivalence, margin, level)


def _t_cdf(x: float, df: int) -> float:
    """Student's t CDF (``scipy.stats.t.cdf``; its ufunc ``scipy.special.stdtr``, ~100x faster per call)."""
    return float(_special.stdtr(df, x))


def _t_quantile(p: float, df: int) -> float:
    """Student's t quantile (``scipy.stats.t.ppf``; its ufunc ``scipy.special.stdtrit``)."""
    return float(_special.stdtrit(df, p))


def _tost(mean: float, se: float, n: int, margin: float) -> float:
    """The larger of the two one-sided p-values of H0: difference ≤ −margin and H0: difference ≥ +margin."""
    lower = 1.0 - _t_cdf((mean + margin) / se, n - 1)
    upper = _t_cdf((mean - margin) / se, n - 1)
    return max(lower, upper)


def detectable_difference(n: int, sd: float, level: float = 0.95, power: float = POWER) -> float:
    """The smallest true mean paired difference that the two-sided paired t-test over ``n`` seeds (paired sd
    ``sd``, confidence ``level``) detects with probability ``power`` (80 %): exact, from the noncentral t.

    Under a true difference δ the statistic ``T = mean / (s_d / √n)`` is noncentral t with ``n − 1`` degrees of
    freedom and noncentrality ``δ √n / sd`` (``scipy.stats.nct``); the test rejects when ``|T| > t_{1−α/2, n−1}``.
    The returned δ solves ``P(|T| > t_crit) = power`` (``scipy.optimize.brentq``), in the units of ``sd``.
    (:class:`PairedVerdict`'s ``detectable`` is the shifted-central-t approximation of the same number.)
    NaN when ``n < 2`` or ``sd`` is not a positive finite number (no spread: nothing to size a test from).
    Raises ``ValueError`` naming ``level`` or ``power`` when they are outside (0, 1)."""
    from scipy import optimize, stats
    if not 0 < level < 1:
        raise ValueError(f"level must be a confidence level in (0, 1), e.g. 0.95; got {level!r}")
    if not 0 < power < 1:
        raise ValueError(f"power must be a probability in (0, 1), e.g. 0.8; got {power!r}")
    if n is None or int(n) < 2 or not (isinstance(sd, (int, float, np.floating)) and math.isfinite(sd) and sd > 0):
        return float("nan")
    df = int(n) - 1
    critical = _t_quantile(1 - (1 - level) / 2, df)

    def shortfall(noncentrality: float) -> float:
        upper_tail = float(stats.nct.sf(critical, df, noncentrality))
        lower_tail = float(stats.nct.cdf(-critical, df, noncentrality))   # ~0 for δ > 0; scipy may give NaN there
        return upper_tail + (lower_tail if math.isfinite(lower_tail) else 0.0) - power

    upper = critical + _t_quantile(power, df)        # the shifted-central-t approximation: a starting bracket
    while shortfall(upper) < 0:                      # widen until the power at ``upper`` reaches ``power``
        upper *= 1.5
    noncentrality = optimize.brentq(shortfall, 0.0, upper, xtol=1e-10)
    return float(noncentrality * float(sd) / math.sqrt(int(n)))


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (NaN counts as 1: a test that could not be made rejects nothing).

    Sorted ascending, ``p_adj(i) = max_{j ≤ i} min(1, (K − j + 1) · p(j))``; reject where ``p_adj ≤ α``.
    """
    values = [1.0 if (p is None or math.isnan(p)) else float(p) for p in p_values]
    order = sorted(range(len(values)), key=values.__getitem__)
    adjusted = [1.0] * len(values)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(values) - rank) * values[index]))
        adjusted[index] = running
    return adjusted


def holm_verdict(pairs: Mapping[str, tuple[Sequence[float], Sequence[float]]], margin: float = 0.5,
                 level: float = 0.95) -> FamilyVerdict:
    """A claim over several pairs: ``pairs`` maps a name (e.g. ``"LoRSP vs LP"``) to ``(a, b)`` per-seed
    accuracies. Each pair is tested by :func:`paired_verdict`, then Holm's rule decides each pair's verdict
    and the claim's (see the module docstring). Raises ``ValueError`` when ``pairs`` is empty."""
    _check_settings(margin, level)
    if not pairs:
        raise ValueError("holm_verdict needs at least one pair (name → (a, b))")
    names = list(pairs)
    tests = []
    for name in names:
        try:
            tests.append(paired_verdict(*pairs[name], margin=margin, level=level))
        except ValueError as error:
            raise ValueError(f"pair {name!r}: {error}") from error
    alpha = 1.0 - level
    p_adjusted = holm_adjust([t.p_value for t in tests])
    p_equivalence = holm_adjust([t.p_equivalence for t in tests])
    out = []
    for name, test, p_diff, p_eq in zip(names, tests, p_adjusted, p_equivalence):
        if p_diff <= alpha and not test.reason:
            verdict = "holds" if test.difference > 0 else "reversed"
        elif p_eq <= alpha / 2 and not test.reason:
            verdict = "equivalent"
        else:
            verdict = "inconclusive"
        out.append(HolmPair(name, test, p_diff, p_eq, verdict))
    verdicts = [pair.verdict for pair in out]
    if all(v == "holds" for v in verdicts):
        combined = "holds"
    elif "reversed" in verdicts:
        combined = "reversed"
    elif all(v == "equivalent" for v in verdicts):
        combined = "equivalent"
    else:
        combined = "inconclusive"
    return FamilyVerdict(combined, tuple(out), margin, level)
