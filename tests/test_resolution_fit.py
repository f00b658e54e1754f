"""The resolution fit on synthetic points with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from surrinf.validation import fit_resolution, resolution_model


def test_fit_recovers_known_terms():
    e = np.geomspace(1.0, 500.0, 12)
    truth = resolution_model(e, 0.15, 0.01, 0.3)
    err = 0.01 * truth
    rng = np.random.default_rng(0)
    y = truth + err * rng.standard_normal(e.size)
    fit = fit_resolution(e, y, err)
    # 1 % points give parameter errors of a few per cent: compare within 4 sigma of the fit's own errors
    assert abs(fit.a - 0.15) < 4 * fit.a_err and abs(fit.c - 0.3) < 4 * fit.c_err
    assert abs(fit.b - 0.01) < 4 * fit.b_err
    assert fit.ndf == 9 and fit.chi2 < 30
    np.testing.assert_allclose(fit(e), resolution_model(e, fit.a, fit.b, fit.c))


def test_fit_subset_of_terms_and_errors():
    e = np.array([1.0, 4.0, 16.0, 64.0])
    y = 0.2 / np.sqrt(e)
    fit = fit_resolution(e, y, 0.001 * np.ones(4), terms=("a",))
    assert fit.a == pytest.approx(0.2, rel=1e-6) and fit.b == 0 and fit.c == 0
    with pytest.raises(ValueError, match="terms"):
        fit_resolution(e, y, np.ones(4), terms=("d",))
    with pytest.raises(ValueError, match="more than"):
        fit_resolution(e[:2], y[:2], np.ones(2), terms=("a", "b"))
    with pytest.raises(ValueError, match="rel_resolution_err"):
        fit_resolution(e, y, np.zeros(4))
