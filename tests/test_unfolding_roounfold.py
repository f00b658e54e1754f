"""RooUnfold's standard example, unfolded with IBU as docs/unfolding.md shows it (the documented example as a test)."""

from __future__ import annotations

import jax
import numpy as np

from surrinf.unfolding import ibu, roounfold_example


def _chi2(result, truth: np.ndarray) -> float:
    d = np.asarray(result.unfolded) - truth
    return float(d @ np.linalg.solve(np.asarray(result.total_covariance), d))


def test_roounfold_example_ibu_converges_to_the_double_breit_wigner():
    ex = roounfold_example(jax.random.key(0))  # 100k flat training events, 10k double Breit-Wigner test events
    assert ex.response.n_truth == ex.response.n_reco == 40
    four = ibu(ex.test_data, ex.response, iterations=4)
    many = ibu(ex.test_data, ex.response, iterations=64)
    ndf = ex.test_truth.size
    # Known regularisation bias: 4 iterations from a flat prior cannot resolve peaks of FWHM 0.7-1.0 smeared by 0.5
    # (chi2 ~ 1.2e3 for 40 bins); documented in docs/unfolding.md.
    chi2_four, chi2_many = _chi2(four, ex.test_truth), _chi2(many, ex.test_truth)
    assert chi2_four > 10 * ndf
    # With 64 iterations the result agrees with the test truth within its total (data + response) covariance:
    # chi2 ~ 41 here; the bound is ndf + 5 sd of a chi2 with ndf degrees of freedom (sd = sqrt(2 ndf)).
    assert chi2_many < ndf + 5 * np.sqrt(2 * ndf)
    # The efficiency correction restores the generated total: 10 000 events within 3 sd of the summed estimate.
    total = np.asarray(many.unfolded).sum()
    sd_total = np.sqrt(np.asarray(many.total_covariance).sum())
    assert abs(total - ex.test_truth.sum()) < 3 * sd_total
