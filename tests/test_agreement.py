"""The agreement figures of `zkernels check-quantized` against scipy and hand-worked lists."""
import numpy as np
import pytest
from scipy.stats import spearmanr

from zkernels.agreement import compare_list, spearman, summarize


def test_spearman_matches_scipy_with_and_without_ties():
    rng = np.random.default_rng(0)
    for n in (2, 5, 40):
        a, b = rng.normal(size=n), rng.normal(size=n)
        assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
        ta, tb = np.round(a), np.round(b * 0.5)  # many ties
        if len(set(ta)) > 1 and len(set(tb)) > 1:
            assert spearman(ta, tb) == pytest.approx(spearmanr(ta, tb).statistic, abs=1e-12)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError, match="one length"):
        spearman([1, 2], [1, 2, 3])


def test_compare_and_summarize_hand_worked_lists():
    ref = [0.9, 0.1, 0.5, 0.3]
    same = compare_list(ref, [0.8, 0.0, 0.4, 0.2], k=2)
    assert same.spearman == pytest.approx(1.0) and same.top1_same and same.topk_overlap == 1.0
    assert same.max_abs_diff == pytest.approx(0.1)
    swapped = compare_list(ref, [0.5, 0.1, 0.9, 0.3], k=2)  # top two swap places: rho = 1 - 6 * 2 / (4 * 15)
    assert not swapped.top1_same and swapped.topk_overlap == 1.0 and swapped.spearman == pytest.approx(0.8)
    s = summarize([ref, ref], [[0.8, 0.0, 0.4, 0.2], [0.5, 0.1, 0.9, 0.3]], k=2)
    assert s["top1_agreement"] == 0.5 and s["spearman_min"] == pytest.approx(0.8)
    assert s["diff_max"] == pytest.approx(0.4) and s["diff_p50"] == pytest.approx(0.1)
