"""Numerical robustness of GaussianMixture on inputs found by the R4 bug hunt.

Each test here failed on the code before its fix (see the commit messages).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from _helpers import BACKENDS, COVARIANCE_TYPES
from hypothesis import given
from hypothesis import strategies as st

from fastem import GaussianMixture
from fastem.backends._numpy import logsumexp_rows


def _two_blobs(n: int = 60, d: int = 2, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(0, 1, (n // 2, d)), rng.normal(5, 1, (n - n // 2, d))])


@given(
    st.lists(
        st.lists(
            st.one_of(st.just(-np.inf), st.floats(-1e300, 1e300, allow_nan=False)),
            min_size=3,
            max_size=3,
        ),
        min_size=1,
        max_size=6,
    )
)
def test_logsumexp_rows_matches_a_direct_reduction(rows):
    """Row-wise logsumexp equals numpy's pairwise ``logaddexp`` reduction, also for a
    row of all ``-inf`` (a zero density: ``-inf``, not the NaN of ``-inf - -inf``)."""
    a = np.array(rows, dtype=np.float64)
    with np.errstate(over="ignore"):
        expected = np.logaddexp.reduce(a, axis=1)
    got = logsumexp_rows(a)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(a).all(axis=1))


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_far_outlier_has_log_density_minus_inf_not_nan(backend, covariance_type):
    """A row so far from every component that its Mahalanobis distances overflow has
    density 0: ``score_samples`` gives -inf (scikit-learn's value), not NaN, and the
    other rows keep their values bit for bit."""
    X = _two_blobs()
    gm = GaussianMixture(2, covariance_type=covariance_type, backend=backend, random_state=0)
    gm.fit(X)
    T = np.array([[1e200, 0.0], [1e160, -1e160], [0.5, 0.5]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        scores = gm.score_samples(T)
    np.testing.assert_array_equal(scores[:2], -np.inf)
    assert scores[2] == gm.score_samples(T[2:])[0]
    assert gm.score(T[2:]) == pytest.approx(scores[2])
    sklearn_mixture = pytest.importorskip("sklearn.mixture")
    ref = sklearn_mixture.GaussianMixture(2, covariance_type=covariance_type)
    for attr in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        setattr(ref, attr, getattr(gm, attr))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        np.testing.assert_allclose(scores, ref.score_samples(T), rtol=1e-12)


def _unit_precisions(covariance_type: str, k: int, d: int) -> np.ndarray:
    return {
        "full": np.broadcast_to(np.eye(d), (k, d, d)).copy(),
        "tied": np.eye(d),
        "diag": np.ones((k, d)),
        "spherical": np.ones(k),
    }[covariance_type]


def _with_zero_weight_far_row(nan: bool, dtype=np.float64, far_value: float = 1e160):
    X0 = _two_blobs(d=3, seed=1)
    if nan:
        X0[::4, 1] = np.nan
    far = np.array([[far_value, np.nan if nan else far_value, -far_value]])
    X = np.concatenate([X0[:30], far, X0[30:]])
    sw = np.ones(X.shape[0])
    sw[30] = 0.0
    return X0.astype(dtype), X.astype(dtype), sw


def _far_row_kw(covariance_type: str, backend: str, X0: np.ndarray) -> dict:
    return dict(
        covariance_type=covariance_type,
        backend=backend,
        max_iter=5,
        tol=0.0,
        means_init=X0[[1, -2]].astype(np.float64),
        weights_init=np.array([0.5, 0.5]),
        precisions_init=_unit_precisions(covariance_type, 2, 3),
    )


# float32: 1e20 squares to inf in float32 (the float32 kernels' distances), not in float64
@pytest.mark.parametrize(
    "dtype, far_value", [(np.float64, 1e160), (np.float32, 1e20)], ids=["f64", "f32"]
)
@pytest.mark.parametrize("nan", [False, True], ids=["complete", "missing"])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_zero_weight_row_whose_density_underflows_adds_nothing(
    backend, covariance_type, nan, dtype, far_value
):
    """A row of weight 0 is as if absent, also when its density under every component is
    0 (values ~1e160): the fit equals the fit without it. Its ``0 * -inf`` made the
    numpy reference's statistics NaN (an ill-defined-covariance error) where cython
    fits through, and the numba kernels' responsibilities ``exp(-inf - -inf)``."""
    X0, X, sw = _with_zero_weight_far_row(nan, dtype, far_value)
    kw = _far_row_kw(covariance_type, backend, X0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tol=0: no convergence
        ref = GaussianMixture(2, **kw).fit(X0)
        gm = GaussianMixture(2, **kw).fit(X, sample_weight=sw)
    # float32: the row shifts the blocks, and some float32 sums (cython's) round otherwise
    tol = 1e-12 if dtype == np.float64 else 1e-7
    np.testing.assert_allclose(gm.lower_bound_, ref.lower_bound_, rtol=tol)
    np.testing.assert_allclose(gm.means_, ref.means_, rtol=tol, atol=tol)
    np.testing.assert_allclose(gm.covariances_, ref.covariances_, rtol=tol, atol=tol)


@pytest.mark.parametrize("nan", [False, True], ids=["complete", "missing"])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_positive_weight_row_of_density_zero_is_the_ill_defined_covariance_error(
    backend, covariance_type, nan
):
    """The same far row with a positive weight cannot be fitted (its responsibilities are
    0/0): every backend gives the numpy reference's ill-defined covariance error, not
    a ZeroDivisionError from the numba kernels' guard for weight 0."""
    X0, X, sw = _with_zero_weight_far_row(nan)
    kw = _far_row_kw(covariance_type, backend, X0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="ill-defined covariance"):
            GaussianMixture(2, **kw).fit(X)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_fit_does_not_depend_on_the_scale_of_sample_weight(backend, covariance_type):
    """Multiplying every sample weight by a constant leaves the maximum-likelihood fit
    unchanged. The M-step's absolute 10 eps floor on n_k broke that for weights summing
    to well below 1 (unnormalized importance weights): at 1e-12 per row the means were
    off by 5e-5, at 1e-200 they never moved from their start."""
    X = _two_blobs(80, 2, seed=3)
    kw = dict(
        covariance_type=covariance_type,
        backend=backend,
        max_iter=15,
        tol=0.0,
        means_init=X[[0, -1]],
        weights_init=np.array([0.5, 0.5]),
        precisions_init=_unit_precisions(covariance_type, 2, 2),
    )
    sw = np.random.default_rng(3).uniform(0.5, 2.0, X.shape[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tol=0: no convergence
        ref = GaussianMixture(2, **kw).fit(X, sample_weight=sw)
        for scale in (1e-12, 1e-200):
            gm = GaussianMixture(2, **kw).fit(X, sample_weight=sw * scale)
            np.testing.assert_allclose(gm.weights_, ref.weights_, rtol=1e-10)
            np.testing.assert_allclose(gm.means_, ref.means_, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(gm.covariances_, ref.covariances_, rtol=1e-10)
            np.testing.assert_allclose(gm.lower_bound_, ref.lower_bound_, rtol=1e-12)


def test_empty_component_floor_is_scikit_learns_for_totals_of_at_least_one():
    """Unit weights (any total >= 1): exactly scikit-learn's ``10 * eps``; below 1 it
    scales with the total, so the floor is the same fraction of the data's weight."""
    from fastem._stats import Stats, empty_component_floor

    eps = np.finfo(np.float64).eps
    stats = Stats.zeros(2, 3, True, np.zeros((2, 3)))
    for total, expected in ((1.0, 10 * eps), (150.0, 10 * eps), (1e-12, 10 * eps * 1e-12)):
        stats.weight_sum = total
        assert empty_component_floor(stats, eps) == expected
    stats.weight_sum = 0.0  # statistics with no total recorded: the plain constant
    assert empty_component_floor(stats, eps) == 10 * eps


@pytest.mark.parametrize("model", ["EVI", "EVV", "VEV", "VEI"])
def test_mclust_fit_does_not_depend_on_the_scale_of_sample_weight(model):
    """mclust's M-steps had their own absolute ``10 eps`` floor (the test above, for
    the mclust models): at 1e-12 per row the fit moved by ~1e-5. The iterative VEV and
    VEI solvers stop on their own tolerances, so those match to 1e-8."""
    X = _two_blobs(80, 3, seed=5)
    kw = dict(covariance_type=model, backend="numpy", max_iter=10, tol=0.0,
              means_init=X[[0, -1]], weights_init=np.array([0.5, 0.5]))  # fmt: skip
    sw = np.random.default_rng(5).uniform(0.5, 2.0, X.shape[0])
    rtol = 1e-12 if model in ("EVI", "EVV") else 1e-8
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tol=0: no convergence
        ref = GaussianMixture(2, **kw).fit(X, sample_weight=sw)
        gm = GaussianMixture(2, **kw).fit(X, sample_weight=sw * 1e-12)
    np.testing.assert_allclose(gm.means_, ref.means_, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(gm.covariances_, ref.covariances_, rtol=rtol)


@pytest.mark.parametrize("model", ["EVI", "EVV"])
def test_mclust_equal_volume_models_fit_data_at_1e150(model):
    """``(sum g / n) * W / g`` overflowed at data scales near 1e150 (W ~ 1e300 times
    sum g ~ 1e300); dividing first keeps every intermediate in range (reg_covar=0: an
    absolute floor would not scale)."""
    X = _two_blobs(80, 3, seed=5)
    kw = dict(covariance_type=model, backend="numpy", max_iter=5, random_state=0, reg_covar=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        unit = GaussianMixture(2, **kw).fit(X)
        big = GaussianMixture(2, **kw).fit(X * 1e150)
    np.testing.assert_allclose(big.covariances_ / 1e300, unit.covariances_, rtol=1e-9)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_float32_data_near_1e20_fits_as_the_numpy_reference(request, backend, covariance_type):
    """float32 data whose squares overflow float32 (1e20 ** 2 > 3.4e38) fit as at scale 1
    on the numpy reference and numba (second moments in float64, or of scaled values);
    cython's full float32 statistics overflow (an ill-defined covariance error)."""
    # Left (session 12): a fix belongs in the float32 tile kernel (_full_tiles.h), whose
    # block sums are float32 by design (twice float64's lanes); scaling r / rsum by a
    # power of two picked per pass would keep its speed but needs the rows' reach
    # about each mean, which no pass knows beforehand.
    if backend == "cython" and covariance_type == "full":  # strict: remove once fixed
        reason = "cython full float32: fastem_accum_full_f32 squares in float32 (inf)"
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason, raises=ValueError))
    X = _two_blobs(80, 3, seed=4)
    kw = dict(covariance_type=covariance_type, max_iter=5, tol=0.0, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tol=0: no convergence
        ref = GaussianMixture(2, backend="numpy", means_init=X[[0, -1]], **kw)
        ref.fit(X.astype(np.float32))
        big = GaussianMixture(2, backend=backend, means_init=X[[0, -1]] * 1e20, **kw)
        big.fit((X * 1e20).astype(np.float32))
    np.testing.assert_allclose(big.means_ / 1e20, ref.means_, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(big.weights_, ref.weights_, rtol=1e-4)
    # covariances_ (float32, ~1e40) overflow as scikit-learn's would: compare the factors
    np.testing.assert_allclose(
        big.precisions_cholesky_.astype(np.float64) * 1e20, ref.precisions_cholesky_, rtol=1e-3
    )


def _far_start_fits(backend, covariance_type):
    X = _two_blobs(200, 2, seed=0) + 1e8
    kw = dict(covariance_type=covariance_type, backend=backend, tol=1e-12, max_iter=300)
    kw.update(weights_init=np.array([0.5, 0.5]), means_init=np.array([[0.0, 0.0], [0.0, 1.0]]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = GaussianMixture(2, precisions_init=_unit_precisions(covariance_type, 2, 2), **kw)
        return gm.fit(X), X


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_start_1e8_standard_deviations_from_the_data_fits(backend, covariance_type):
    """means_init near 0 for data at 1e8 (scikit-learn fits 'full'): the first pass's
    second moments, about means 1e8 sd away, lost every digit when centred on the new
    means (an ill-defined covariance). The means now move first and the pass is taken
    again about them. From that start every row goes to component 1 (the nearer), so
    the fit has a closed form: component 1 is the data's mean and covariance.
    'tied' raised on every backend: the far-shift check was blind to it (the empty
    component's NaN step), and the compiled tied kernels pooled the scatter about
    the plain mean of the means, 5e7 from the data; they now centre on the means
    weighted by the moved weights (``backends._tied.centre_of``)."""
    gm, X = _far_start_fits(backend, covariance_type)
    reg = 1e-6
    np.testing.assert_allclose(gm.means_[1] - 1e8, X.mean(axis=0) - 1e8, atol=1e-6)
    np.testing.assert_array_equal(gm.means_[0], [0.0, 0.0])  # empty: stays
    cov = np.cov(X.T, bias=True)
    expected = {
        "full": cov + reg * np.eye(2),
        "tied": cov + reg * np.eye(2),
        "diag": np.diag(cov) + reg,
        "spherical": np.diag(cov).mean() + reg,
    }[covariance_type]
    got = gm.covariances_ if covariance_type == "tied" else gm.covariances_[1]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    if covariance_type == "full":
        sklearn_mixture = pytest.importorskip("sklearn.mixture")
        ref = sklearn_mixture.GaussianMixture(
            2, covariance_type="full", tol=1e-12, max_iter=300, weights_init=[0.5, 0.5],
            means_init=np.array([[0.0, 0.0], [0.0, 1.0]]),
            precisions_init=_unit_precisions("full", 2, 2),
        ).fit(X)  # fmt: skip
        np.testing.assert_allclose(gm.means_ - 1e8, ref.means_ - 1e8, atol=1e-6)
        np.testing.assert_allclose(gm.covariances_[1], ref.covariances_[1], rtol=1e-6)


def test_far_start_re_pass_is_not_counted_in_n_iter():
    """The decision (issue #14, n_iter_ honest about passes): the re-centring repeat
    is the iteration's own E-step, not an iteration; plain EM's n_iter_ is then
    scikit-learn's on the same far start (3), one lower bound per iteration."""
    sklearn_mixture = pytest.importorskip("sklearn.mixture")
    gm, X = _far_start_fits("numpy", "full")
    kw = dict(covariance_type="full", tol=1e-12, max_iter=300, weights_init=[0.5, 0.5])
    kw.update(means_init=np.array([[0.0, 0.0], [0.0, 1.0]]))
    ref = sklearn_mixture.GaussianMixture(
        2, precisions_init=_unit_precisions("full", 2, 2), **kw
    ).fit(X)
    assert gm.n_iter_ == ref.n_iter_ == len(gm.lower_bounds_)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_far_start_with_missing_values_agrees_across_backends(backend, covariance_type):
    """The missing-data passes take the same re-pass; the tied one centres on the
    weighted means too (``_tied.missing_setup``): every backend fits, as numpy does."""
    X = _two_blobs(200, 2, seed=0) + 1e8
    X[3, 1] = np.nan
    kw = dict(covariance_type=covariance_type, tol=1e-12, max_iter=300)
    kw.update(weights_init=np.array([0.5, 0.5]), means_init=np.array([[0.0, 0.0], [0.0, 1.0]]))
    kw.update(precisions_init=_unit_precisions(covariance_type, 2, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = GaussianMixture(2, backend="numpy", **kw).fit(X)
        gm = GaussianMixture(2, backend=backend, **kw).fit(X)
    observed = np.nanmean(X, axis=0)
    np.testing.assert_allclose(ref.means_[1] - 1e8, observed - 1e8, atol=0.1)
    np.testing.assert_allclose(gm.means_ - 1e8, ref.means_ - 1e8, atol=1e-6)
    np.testing.assert_allclose(gm.covariances_, ref.covariances_, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("missing", [False, True])
def test_tied_far_start_scores_as_the_numpy_reference(backend, missing):
    """After a tied far start (an empty component left at 0, the data's at 1e8) the
    compiled log-densities centred on the plain mean of the means (5e7) were off by
    6e-9; they centre where the pass does now, and agree with numpy's to rounding."""
    ref, X = _far_start_fits("numpy", "tied")
    gm, _ = _far_start_fits(backend, "tied")
    if missing:
        X = X.copy()
        X[::7, 1] = np.nan
    np.testing.assert_allclose(gm.score_samples(X), ref.score_samples(X), rtol=0, atol=1e-12)


def test_far_start_tied_control_without_the_weighted_centre(monkeypatch):
    """Negative control: with the plain mean of the means as the compiled tied
    pass's centre (5e7 from the data) the tied far start fails again: it raises,
    or (rounding decides) its covariance is off by percents."""
    import fastem.backends._tied as tied

    compiled = [name for name in BACKENDS if name != "numpy"]
    if not compiled:
        pytest.skip("no compiled backend here")
    monkeypatch.setattr(tied, "FAR_CENTRE", np.inf)
    for name in compiled:
        try:
            gm, X = _far_start_fits(name, "tied")
        except ValueError as exc:
            assert "ill-defined covariance" in str(exc)
            continue
        expected = np.cov(X.T, bias=True) + 1e-6 * np.eye(2)
        assert np.abs(gm.covariances_ / expected - 1).max() > 1e-3, name


def test_far_start_control_without_the_recentring_pass(monkeypatch):
    """Negative control: with the far-shift check blinded the 'full' fit raises again."""
    import fastem.mixture

    monkeypatch.setattr(fastem.mixture, "lost_to_a_far_shift", lambda *a: False)
    with pytest.raises(ValueError, match="ill-defined covariance"):
        _far_start_fits("numpy", "full")


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_far_shift_check_is_quiet_on_ordinary_steps(covariance_type):
    """The check fires only past 8 lost digits: a first pass from a k-means-free random
    start on ordinary data (means moving a few sd) does not trigger it."""
    from fastem._stats import Stats, lost_to_a_far_shift

    rng = np.random.default_rng(0)
    full = covariance_type in ("full", "tied")
    stats = Stats.zeros(2, 3, full, np.zeros((2, 3)))
    x = rng.normal(size=(500, 3)) * 10 + 50  # means move 5 sd from the shift
    r = rng.uniform(size=(500, 2))
    stats.nk[:] = r.sum(0)
    stats.sx[:] = r.T @ x
    sq = np.einsum("nk,ni,nj->kij", r, x, x)
    if not full:
        sq = np.diagonal(sq, axis1=1, axis2=2)
    elif covariance_type == "tied":
        sq = np.stack([sq.sum(0), np.zeros((3, 3))])
    stats.sxx[:] = sq
    assert not lost_to_a_far_shift(stats, covariance_type == "tied", 1e-6)
    x = x + 1e6  # 1e5 sd from the shift: 10 digits
    stats.sx[:] = r.T @ x
    sq = np.einsum("nk,ni,nj->kij", r, x, x)
    if not full:
        sq = np.diagonal(sq, axis1=1, axis2=2)
    elif covariance_type == "tied":
        sq = np.stack([sq.sum(0), np.zeros((3, 3))])
    stats.sxx[:] = sq
    assert lost_to_a_far_shift(stats, covariance_type == "tied", 1e-6)


@pytest.mark.parametrize("acceleration", ["squarem", "anderson"])
def test_far_start_with_acceleration_fits_as_plain_em(acceleration):
    """The accelerated EM map takes the same re-centred pass (it raised as plain EM did)."""
    X = _two_blobs(200, 2, seed=0) + 1e8
    kw = dict(means_init=np.zeros((2, 2)), random_state=0, backend="numpy", tol=1e-10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = GaussianMixture(2, **kw).fit(X)
        fast = GaussianMixture(2, acceleration=acceleration, **kw).fit(X)
    np.testing.assert_allclose(fast.means_ - 1e8, plain.means_ - 1e8, atol=1e-5)
    np.testing.assert_allclose(fast.covariances_, plain.covariances_, rtol=1e-4)
