"""ConditionalStandardize: features standardised as functions of a condition."""

from __future__ import annotations

import numpy as np
import pytest

from surrinf.data import ConditionalStandardize


def test_standardises_within_condition_slices_and_inverts():
    rng = np.random.default_rng(0)
    c = rng.uniform(0.0, 7.0, 60_000)
    # mean and width both change strongly with the condition (width by a factor 1000 for feature 1)
    x = np.stack([2 + c + (0.1 + 0.2 * c) * rng.normal(size=c.size), np.exp(-c) * rng.normal(size=c.size)], axis=1)
    t = ConditionalStandardize.fit(x, c)
    z = t(x, c)
    np.testing.assert_allclose(z.mean(0), 0.0, atol=0.02)
    np.testing.assert_allclose((z**2).mean(0), 1.0, rtol=1e-6)  # unit mean square by construction
    for lo in (0.0, 3.0, 6.0):  # per slice: ~8500 values, std of the std ~0.8 %; cubic-fit bias a few %
        sel = (c > lo) & (c < lo + 1.0)
        np.testing.assert_allclose(z[sel].std(0), 1.0, atol=0.06)
    np.testing.assert_allclose(t.inverse(z, c), x, rtol=1e-10, atol=1e-12)
    assert np.array_equal(ConditionalStandardize.from_dict(t.to_dict())(x, c), z)


def test_bad_input():
    with pytest.raises(ValueError, match="one condition per row"):
        ConditionalStandardize.fit(np.ones((10, 2)), np.ones(9))
    with pytest.raises(ValueError, match="at least"):
        ConditionalStandardize.fit(np.ones((5, 2)), np.ones(5))
    t = ConditionalStandardize.fit(np.random.default_rng(1).normal(size=(100, 2)), np.linspace(0, 1, 100))
    with pytest.raises(ValueError, match="features"):
        t(np.ones((3, 3)), np.ones(3))
