"""Classifier two-sample test, AUC / isotonic helpers and classifier reweighting (fast config, small samples)."""

from __future__ import annotations

import itertools
import math

import jax
import numpy as np
import pytest

from surrinf.validation.classifier import (
    ClassifierConfig,
    auc,
    bootstrap_auc,
    classifier_test,
    fit_isotonic,
    pav,
    train_classifier,
)
from surrinf.validation.reweighting import closure_check, effective_sample_size, reweight

FAST = ClassifierConfig.small()
N = 8000  # rows per class; the test split has 0.2 N = 1600 per class


def _gauss(seed: int, n: int, dim: int, shift: float = 0.0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, dim))
    x[:, 0] += shift
    return x


@pytest.fixture(scope="module")
def null_result():
    return classifier_test(jax.random.key(0), _gauss(1, N, 10), _gauss(2, N, 10), FAST)


@pytest.fixture(scope="module")
def shift_result():
    return classifier_test(jax.random.key(1), _gauss(3, N, 10), _gauss(4, N, 10, 0.3), FAST)


# ---------------------------------------------------------------------------------------------- two-sample test


def test_same_distribution_gives_auc_half_and_jsd_zero(null_result):
    # Standard error of the Mann-Whitney AUC under H0 on the test split (n1 = n2 = 1600):
    # sqrt((n1 + n2 + 1) / (12 n1 n2)) = 0.0102. The network and the isotonic map are fitted on other rows, so
    # under H0 the test AUC is centred on 0.5 with that error (calibration ties count 1/2 and add no bias):
    # 3 sigma = 0.031, plus ~0.01 slack for the step-function calibration -> |AUC - 0.5| < 0.04.
    n1 = n2 = 0.2 * N
    se = math.sqrt((n1 + n2 + 1) / (12 * n1 * n2))
    assert abs(se - 0.0102) < 5e-4
    r = null_result
    assert 0.46 <= r.auc <= 0.54
    assert r.auc_interval[0] < 0.5 < r.auc_interval[1]
    assert 0.5 * se < r.auc_std < 2.0 * se  # bootstrap spread agrees with the analytic error
    # Calibrated BCE on the test split is ln 2 up to the isotonic map's noise: JSD ~ 0.
    assert abs(r.jsd) < 0.02
    assert r.jsd == pytest.approx((math.log(2) - r.bce) / math.log(2))
    assert (r.n_train, r.n_val, r.n_test) == (int(1.2 * N), int(0.4 * N), int(0.4 * N))
    assert 1 <= r.epochs <= FAST.max_epochs


def test_small_mean_shift_is_detected(shift_result):
    # Optimal AUC for a 0.3 sigma shift in one coordinate: Phi(0.3 / sqrt 2) = 0.584.
    r = shift_result
    assert r.auc > 0.55
    assert r.auc_interval[0] > 0.5
    assert r.auc_interval[0] <= r.auc <= r.auc_interval[1]
    # JSD of the optimal classifier: ~ delta^2 / (8 ln 2) = 0.016; the fitted one is smaller but positive.
    assert 0.0 < r.jsd < 0.03
    assert 0.0 < r.jsd_raw < 0.03


def test_strong_shift_gives_high_auc():
    # Phi(3 / sqrt 2) = 0.983.
    r = classifier_test(jax.random.key(2), _gauss(5, 4000, 10), _gauss(6, 4000, 10, 3.0), FAST)
    assert r.auc > 0.9
    assert r.jsd > 0.5


def test_class_balance_with_unequal_sizes():
    # N = 4 M: without class weights the calibrated output of a null test would sit at N / (N + M) = 0.8.
    clf = train_classifier(jax.random.key(3), _gauss(7, 6000, 5), _gauss(8, 1500, 5), FAST)
    x = np.concatenate([_gauss(9, 2000, 5)])
    assert abs(np.mean(clf.predict_proba(x)) - 0.5) < 0.06
    assert abs(np.mean(clf.predict_raw(x)) - 0.5) < 0.06
    # Standardisation is fitted on the training split and stored (not trained).
    sp = clf.splits
    x_tr = np.concatenate([_gauss(7, 6000, 5)[sp.train_ref], _gauss(8, 1500, 5)[sp.train_cand]])
    np.testing.assert_allclose(np.asarray(clf.model.mean), x_tr.mean(axis=0), rtol=1e-5, atol=1e-6)
    # Stratified, disjoint splits covering every row.
    for n, parts in (
        (6000, (sp.train_ref, sp.val_ref, sp.test_ref)),
        (1500, (sp.train_cand, sp.val_cand, sp.test_cand)),
    ):
        assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(n))
        assert [p.size for p in parts] == [round(0.6 * n), round(0.2 * n), n - round(0.6 * n) - round(0.2 * n)]
    assert clf.train_loss.shape == clf.val_loss.shape == (clf.epochs_run,)
    assert clf.val_loss[clf.best_epoch] <= np.min(clf.val_loss) + FAST.min_delta


# ---------------------------------------------------------------------------------------------- AUC helper


def _auc_brute(s, y, w=None):
    w = np.ones_like(s) if w is None else w
    num = den = 0.0
    for i, j in itertools.product(np.flatnonzero(y == 1), np.flatnonzero(y == 0)):
        num += w[i] * w[j] * ((s[i] > s[j]) + 0.5 * (s[i] == s[j]))
        den += w[i] * w[j]
    return num / den


def test_auc_matches_brute_force_with_ties():
    rng = np.random.default_rng(10)
    for trial in range(20):
        n = int(rng.integers(2, 40))
        s = rng.integers(0, 5, size=n).astype(float)  # many ties
        y = rng.integers(0, 2, size=n)
        y[:2] = [0, 1]
        w = rng.uniform(0.1, 3.0, size=n)
        assert auc(s, y) == pytest.approx(_auc_brute(s, y), abs=1e-12), trial
        assert auc(s, y, w) == pytest.approx(_auc_brute(s, y, w), abs=1e-12), trial


def test_auc_edge_cases():
    y = np.array([0, 0, 0, 1, 1])
    assert auc([0.1, 0.2, 0.3, 0.8, 0.9], y) == 1.0
    assert auc([0.8, 0.9, 0.95, 0.1, 0.2], y) == 0.0
    assert auc(np.full(5, 0.3), y) == 0.5
    with pytest.raises(ValueError, match="both classes"):
        auc([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="labels"):
        auc([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError, match="scores"):
        auc([0.1, np.nan], [0, 1])


def test_bootstrap_auc_is_vectorised_resampling():
    rng = np.random.default_rng(11)
    s = rng.integers(0, 20, size=300).astype(float)
    y = (rng.uniform(size=300) < 0.5 + 0.02 * (s - 10)).astype(int)
    key = jax.random.key(5)
    boot = bootstrap_auc(key, s, y, 4)
    idx = np.asarray(jax.random.randint(jax.random.fold_in(key, 0), (4, 300), 0, 300))
    np.testing.assert_allclose(boot, [auc(s[i], y[i]) for i in idx], atol=1e-12)
    assert np.array_equal(boot, bootstrap_auc(key, s, y, 4))


# ---------------------------------------------------------------------------------------------- isotonic


def _pav_brute(y, w):
    # Isotonic LS solution: f_i = max_{j <= i} min_{k >= i} (weighted mean of y[j..k]).
    n = y.size
    return np.array(
        [
            max(min(np.average(y[j : k + 1], weights=w[j : k + 1]) for k in range(i, n)) for j in range(i + 1))
            for i in range(n)
        ]
    )


def test_pav_matches_brute_force():
    rng = np.random.default_rng(12)
    for _ in range(30):
        n = int(rng.integers(1, 25))
        y = rng.integers(0, 2, size=n).astype(float) if rng.uniform() < 0.5 else rng.normal(size=n)
        w = rng.uniform(0.2, 2.0, size=n)
        f = pav(y, w)
        assert np.all(np.diff(f) >= -1e-12)
        np.testing.assert_allclose(f, _pav_brute(y, w), atol=1e-12)
        # Each constant block is the weighted mean of its y values.
        for v in np.unique(f):
            blk = f == v
            assert np.average(y[blk], weights=w[blk]) == pytest.approx(v, abs=1e-12)


def test_isotonic_map_pools_ties_and_is_monotone():
    x = np.array([0.1, 0.1, 0.2, 0.3, 0.3, 0.4, 0.5])
    y = np.array([1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0])
    m = fit_isotonic(x, y)
    assert np.all(np.diff(m.x) > 0) and np.all(np.diff(m.y) >= 0)
    # Pooled: {0.1: 0.5, 0.2: 1, 0.3: 0} -> PAV merges 0.1..0.3 to (1 + 1 + 0) / 5 = 0.4; 0.4, 0.5 -> 1.
    np.testing.assert_allclose(m([0.1, 0.2, 0.3, 0.4, 0.5]), [0.4, 0.4, 0.4, 1.0, 1.0])
    np.testing.assert_allclose(m([0.0, 0.35, 0.9]), [0.4, 0.7, 1.0])  # clamped ends, linear between blocks
    grid = np.linspace(-1, 2, 301)
    assert np.all(np.diff(m(grid)) >= 0)


def test_isotonic_pooling_of_pure_end_blocks():
    x = np.arange(8.0)
    y = np.array([0, 0, 1, 0, 1, 1, 0, 1], dtype=float)  # PAV: [0, 0, .5, .5, .67 x3, 1]
    np.testing.assert_allclose(fit_isotonic(x, y)(x), [0, 0, 0.5, 0.5, 2 / 3, 2 / 3, 2 / 3, 1])
    m = fit_isotonic(x, y, pool_pure_ends=True)
    # Lower pure block {0, 1} pooled with {2, 3}: 1/4; upper pure block {7} pooled with {4, 5, 6}: 3/4.
    np.testing.assert_allclose(m(x), [0.25] * 4 + [0.75] * 4)
    assert 0 < m(-5.0) and m(50.0) < 1
    assert np.all(np.diff(m(np.linspace(-1, 9, 101))) >= 0)
    one_class = fit_isotonic(x, np.ones(8), pool_pure_ends=True)
    np.testing.assert_allclose(one_class(x), 1.0)


# ---------------------------------------------------------------------------------------------- reweighting


def test_reweighting_closes_a_mean_shift():
    n = 20000
    x_ref, x_cand = _gauss(20, n, 2), _gauss(21, n, 2, 0.2)
    r = reweight(jax.random.key(7), x_ref, x_cand, FAST)
    w = r.weights
    assert w.shape == (n,) and np.all(w >= 0)
    assert np.mean(w) == pytest.approx(1.0, abs=1e-12)
    assert r.ess == pytest.approx(effective_sample_size(w)) and r.ess == pytest.approx(np.sum(w) ** 2 / np.sum(w**2))
    assert 0.8 < r.ess_fraction <= 1.0
    assert len(r.classifiers) == 3 and np.array_equal(np.bincount(r.folds), [n // 3 + 1, n // 3 + 1, n // 3])
    mu_w = np.average(x_cand[:, 0], weights=w)
    var_w = np.average((x_cand[:, 0] - mu_w) ** 2, weights=w)
    se = math.sqrt(x_ref[:, 0].var() / n + var_w / r.ess)
    assert abs(x_cand[:, 0].mean() - x_ref[:, 0].mean()) > 10 * se  # the shift is significant before
    assert abs(mu_w - x_ref[:, 0].mean()) < 3 * se
    cc = closure_check(x_ref[:, 0], x_cand[:, 0], w)
    assert cc.w1_before > 0.15
    assert cc.w1_after < cc.w1_before / 3 and cc.ratio > 3


# ------------------------------------------------------------------------------------------ determinism, input checks


def test_same_key_same_bits():
    a, b = _gauss(30, 600, 4), _gauss(31, 600, 4, 0.5)
    cfg = ClassifierConfig.small(n_bootstrap=50, max_epochs=4)
    r1, r2, r3 = (classifier_test(k, a, b, cfg) for k in (jax.random.key(9), jax.random.key(9), 10))
    assert r1.auc == r2.auc and r1.auc_interval == r2.auc_interval and r1.bce == r2.bce
    assert np.array_equal(r1.classifier.val_loss, r2.classifier.val_loss)
    assert not np.array_equal(r1.classifier.splits.test_ref, r3.classifier.splits.test_ref)
    w1, w2, w3 = (reweight(k, a, b, cfg, n_folds=2).weights for k in (4, 4, 5))
    assert np.array_equal(w1, w2)
    assert not np.array_equal(w1, w3)


def test_bad_inputs_raise_naming_the_argument():
    a, b = _gauss(40, 100, 3), _gauss(41, 100, 3)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="x_cand"):
        classifier_test(key, a, _gauss(42, 100, 4), FAST)
    with pytest.raises(ValueError, match="x_ref"):
        classifier_test(key, a[:20], b, FAST)
    with pytest.raises(ValueError, match="x_ref"):
        train_classifier(key, a[:, 0], b, FAST)
    bad = b.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="x_cand"):
        train_classifier(key, a, bad, FAST)
    bad[3, 1] = np.inf
    with pytest.raises(ValueError, match="x_cand"):
        reweight(key, a, bad, FAST)
    with pytest.raises(ValueError, match="split"):
        ClassifierConfig(split=(0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match="clip"):
        reweight(key, a, b, FAST, clip=(1.0, 0.5))
    with pytest.raises(ValueError, match="weights"):
        closure_check(a[:, 0], b[:, 0], np.ones(5))


def test_summaries_are_json_serialisable(null_result):
    import json

    d = json.loads(json.dumps(null_result.to_dict()))
    assert d["auc"] == null_result.auc and d["n_test"] == null_result.n_test
    assert null_result.classifier.model.layers[0].weight.dtype == np.float32
