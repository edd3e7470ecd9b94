"""Fitting on Dask arrays (fastem.dask) on a real two-process distributed cluster.

Workers run backend="numpy" (fresh worker processes would otherwise load the
compiled kernels) except in one test of the default backend.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")

from _helpers import COVARIANCE_TYPES, initial_parameters  # noqa: E402

import fastem.dask as fdask  # noqa: E402
from fastem import GaussianMixture  # noqa: E402
from fastem._events import fit_listener  # noqa: E402
from fastem.datasets import make_mixture  # noqa: E402
from fastem.exceptions import ConvergenceWarning  # noqa: E402

K = 3
RTOL = 1e-10


@pytest.fixture(scope="module")
def client():
    """One real cluster for the module: 2 worker processes, 1 thread each."""
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        silence_logs=logging.ERROR,
    )
    with distributed.Client(cluster) as c:
        c.run(importlib.import_module, "fastem.dask")  # worker imports, once, in parallel
        yield c
    cluster.close()


@pytest.fixture(scope="module")
def data():
    X, _ = make_mixture(2000, 3, K, random_state=0)
    return X


def _fit(X, sample_weight=None, **kwargs):
    gm = GaussianMixture(backend="numpy", **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return gm.fit(X, sample_weight=sample_weight)


def _assert_same_model(a, b, rtol=RTOL):
    np.testing.assert_allclose(b.lower_bound_, a.lower_bound_, rtol=rtol, atol=0)
    np.testing.assert_allclose(b.lower_bounds_, a.lower_bounds_, rtol=rtol, atol=0)
    for attr in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        np.testing.assert_allclose(getattr(b, attr), getattr(a, attr), rtol=rtol, atol=1e-13)
    assert b.n_iter_ == a.n_iter_
    assert b.converged_ == a.converged_
    assert b.means_.dtype == a.means_.dtype


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_fit_equals_in_memory_fit(client, data, covariance_type):
    init = initial_parameters(data, K, covariance_type, seed=1)
    a = _fit(data, max_iter=10, tol=0, **init)
    Xd = da.from_array(data, chunks=(600, 2))  # uneven row chunks, split columns
    b = _fit(Xd, max_iter=10, tol=0, **init)
    _assert_same_model(a, b)


def test_many_chunks(client, data, monkeypatch):
    """More chunks than TREE_FAN_IN: partial sums on the cluster; parameters sent once."""
    monkeypatch.setattr(fdask, "_INLINE_PARAMS_BYTES", 0)
    init = initial_parameters(data, K, "full", seed=1)
    a = _fit(data, max_iter=4, tol=0, **init)
    Xd = da.from_array(data, chunks=90)
    assert Xd.numblocks[0] > 2 * fdask.TREE_FAN_IN
    _assert_same_model(a, _fit(Xd, max_iter=4, tol=0, **init))


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_sample_weight(client, data, covariance_type):
    w = np.random.default_rng(2).integers(0, 4, size=data.shape[0]).astype(float)
    init = initial_parameters(data, K, covariance_type, seed=1)
    a = _fit(data, w, max_iter=6, tol=0, **init)
    Xd = da.from_array(data, chunks=500)
    _assert_same_model(a, _fit(Xd, w, max_iter=6, tol=0, **init))  # numpy weights
    wd = da.from_array(w, chunks=300)  # Dask weights, chunked unlike X: rechunked
    _assert_same_model(a, _fit(Xd, wd, max_iter=6, tol=0, **init))


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_missing_values(client, data, covariance_type):
    X = data.copy()
    rng = np.random.default_rng(3)
    X[rng.random(X.shape) < 0.15] = np.nan
    X[:5] = np.nan  # rows with nothing observed: warned about and left out
    w = rng.uniform(0.5, 2.0, size=X.shape[0])
    init = initial_parameters(data, K, covariance_type, seed=1)
    with pytest.warns(UserWarning, match="every value missing"):
        a = _fit(X, w, max_iter=6, tol=0, **init)
    with pytest.warns(UserWarning, match="every value missing"):
        b = _fit(da.from_array(X, chunks=700), da.from_array(w, chunks=700), max_iter=6, tol=0,
                 **init)  # fmt: skip
    _assert_same_model(a, b)


def test_float32(client, data):
    X = data.astype(np.float32)
    init = initial_parameters(data, K, "full", seed=1)
    a = _fit(X, max_iter=10, tol=0, **init)
    b = _fit(da.from_array(X, chunks=500), max_iter=10, tol=0, **init)
    assert b.means_.dtype == np.float32
    _assert_same_model(a, b, rtol=1e-5)


def test_integer_data_is_fitted_as_float64(client):
    X = np.random.default_rng(4).integers(0, 50, size=(600, 2))
    init = initial_parameters(X.astype(float), 2, "diag", seed=1)
    a = _fit(X, max_iter=5, tol=0, **init)
    b = _fit(da.from_array(X, chunks=200), max_iter=5, tol=0, **init)
    assert b.means_.dtype == np.float64
    _assert_same_model(a, b)


def test_default_backend_on_workers(client, data):
    """The compiled default backend, loaded by name on a worker (one chunk: one
    worker process pays for loading it)."""
    init = initial_parameters(data, K, "full", seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a = GaussianMixture(max_iter=3, tol=0, **init).fit(data)
        b = GaussianMixture(max_iter=3, tol=0, **init).fit(da.from_array(data, chunks=-1))
    assert a.backend_ == b.backend_
    _assert_same_model(a, b)


def test_default_init_equals_in_memory_on_small_data(client, data):
    """Data no bigger than the initialization sample: the sample is every row,
    so the fitted model is the in-memory one."""
    a = _fit(data, n_components=K, random_state=0)
    b = _fit(da.from_array(data, chunks=500), n_components=K, random_state=0)
    _assert_same_model(a, b, rtol=1e-8)


def test_init_from_a_sample(client, data, monkeypatch):
    monkeypatch.setattr(fdask, "INIT_SAMPLE_MIN_ROWS", 300)
    monkeypatch.setattr(fdask, "INIT_SAMPLE_ROWS_PER_COMPONENT", 10)
    Xd = da.from_array(data, chunks=500)
    w = np.ones(data.shape[0])
    w[::2] = 0.0  # a sample drawn only among rows with positive weight
    gm = GaussianMixture(K, backend="numpy", random_state=5)
    data_obj = fdask.dask_fit_data(gm, Xd, w)
    Xs, sws = data_obj.init_arrays()
    assert Xs.shape == (300, 3) and sws.shape == (300,)
    assert (sws > 0).all()
    assert data_obj.init_arrays()[0] is Xs  # drawn once per fit
    rows = {tuple(r) for r in data[1::2]}
    assert all(tuple(r) in rows for r in Xs)
    b1 = _fit(Xd, w, n_components=K, random_state=5)
    b2 = _fit(Xd, w, n_components=K, random_state=5)
    _assert_same_model(b1, b2, rtol=0)  # seeded: reproducible
    a = _fit(data, w, n_components=K, random_state=5)
    # a fit as good as the in-memory one, from a different start
    assert b1.converged_
    assert abs(b1.lower_bound_ - a.lower_bound_) < 0.01


def test_threaded_scheduler_without_client(data):
    """No distributed client: Dask's default (threaded) scheduler runs the passes."""
    init = initial_parameters(data, K, "diag", seed=1)
    a = _fit(data, max_iter=5, tol=0, **init)
    with dask.config.set(scheduler="threads"):
        b = _fit(da.from_array(data, chunks=500), max_iter=5, tol=0, **init)
    _assert_same_model(a, b)


@pytest.mark.parametrize("method", fdask.PREDICT_METHODS)
def test_lazy_predict(client, data, method):
    X = data.copy()
    X[7, 1] = np.nan  # marginal density of the observed values, as in memory
    gm = _fit(data, n_components=K, random_state=0)
    Xd = da.from_array(X, chunks=(700, 2))
    out = fdask.predict_dask(gm, Xd, method)
    assert isinstance(out, da.Array)
    assert out.chunks[0] == Xd.chunks[0]
    expected = getattr(gm, method)(X)
    assert out.shape == expected.shape and out.dtype == expected.dtype
    result = out.compute()
    if method == "predict":
        np.testing.assert_array_equal(result, expected)
    else:
        np.testing.assert_allclose(result, expected, rtol=1e-12)


def test_estimator_methods_on_dask_arrays(client, data):
    """The estimator's own methods take Dask arrays: lazy arrays (scores as
    floats) equal to the in-memory results."""
    X = data.copy()
    X[7, 1] = np.nan
    gm = _fit(data, n_components=K, random_state=0)
    Xd = da.from_array(X, chunks=(700, 2))
    for method in fdask.PREDICT_METHODS:
        out = getattr(gm, method)(Xd)
        assert isinstance(out, da.Array), method
        expected = getattr(gm, method)(X)
        assert out.shape == expected.shape and out.dtype == expected.dtype, method
        np.testing.assert_allclose(out.compute(), expected, rtol=1e-12, err_msg=method)
    for method in ("score", "bic", "aic"):
        got, expected = getattr(gm, method)(Xd), getattr(gm, method)(X)
        assert isinstance(got, float) and np.isfinite(got), method
        assert got == pytest.approx(expected, rel=1e-12), method


def test_bic_and_aic_with_unknown_chunk_sizes(client, data):
    gm = _fit(data, n_components=K, random_state=0)
    Xd = da.from_array(data, chunks=500)
    Xu = Xd[Xd[:, 0] > -np.inf]  # every row, but chunk sizes unknown
    assert np.isnan(Xu.shape[0])
    assert gm.bic(Xu) == pytest.approx(gm.bic(data), rel=1e-12)
    assert gm.aic(Xu) == pytest.approx(gm.aic(data), rel=1e-12)
    assert fdask.score_sum(gm, Xu)[1] == data.shape[0]


def test_task_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # as distributed's nannies set it
    assert fdask._task_threads(None) == 1
    assert fdask._task_threads(3) == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert fdask._task_threads(None) is None


def test_predict_errors(client, data):
    gm = GaussianMixture(K, backend="numpy")
    Xd = da.from_array(data, chunks=500)
    with pytest.raises(Exception, match="not fitted"):
        fdask.predict_dask(gm, Xd)
    gm = _fit(data, n_components=K, random_state=0)
    with pytest.raises(ValueError, match="expecting 3 features"):
        fdask.predict_dask(gm, Xd[:, :2])
    with pytest.raises(ValueError, match="method must be one of"):
        fdask.predict_dask(gm, Xd, "fit")


def _no_work(monkeypatch):
    """Fail the test if an EM pass runs."""

    def boom(*args, **kwargs):
        raise AssertionError("an EM pass ran on invalid input")

    monkeypatch.setattr(fdask.DaskData, "em_stats", boom)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda X: da.zeros((10, 2, 2), chunks=5), "Expected 2D array"),
        (lambda X: da.zeros(10, chunks=5), "Expected 2D array"),
        (lambda X: da.from_array(X.astype(complex), chunks=500), "Complex data"),
        (lambda X: da.from_array(X.astype(str), chunks=500), "must be numeric"),
        (lambda X: da.from_array(X[:2], chunks=1), "n_samples >= n_components"),
        (lambda X: da.from_array(X[:1], chunks=1), "minimum of 2"),
    ],
)
def test_bad_metadata_raises_before_any_task(client, data, monkeypatch, make, match):
    Xd = make(data)
    monkeypatch.setattr(
        fdask.dask, "persist", lambda *a, **k: pytest.fail("work started on bad input")
    )
    with pytest.raises(ValueError, match=match):
        GaussianMixture(K, backend="numpy").fit(Xd)


def test_bad_parameters_raise_before_any_task(client, data, monkeypatch):
    monkeypatch.setattr(
        fdask.dask, "persist", lambda *a, **k: pytest.fail("work started on bad input")
    )
    Xd = da.from_array(data, chunks=500)
    with pytest.raises(ValueError, match="covariance_type"):
        GaussianMixture(K, covariance_type="nope").fit(Xd)
    with pytest.raises(ValueError, match="unknown backend"):
        GaussianMixture(K, backend="nope").fit(Xd)
    with pytest.raises(ValueError, match="means_init must have shape"):
        GaussianMixture(K, means_init=np.zeros((K, 5))).fit(Xd)
    with pytest.raises(ValueError, match="sample_weight.shape"):
        GaussianMixture(K, backend="numpy").fit(Xd, sample_weight=np.ones(5))
    with pytest.raises(ValueError, match="sample_weight.shape"):
        GaussianMixture(K, backend="numpy").fit(Xd, sample_weight=da.ones(5, chunks=5))


def _with_value(X, index, value):
    X = X.copy()
    X[index] = value
    return X


@pytest.mark.parametrize(
    "make_x, weights, match",
    [
        (lambda X: _with_value(X, (1500, 2), np.inf), None, "infinity"),
        (lambda X: _with_value(X, (slice(None), 1), np.nan), None, r"Feature\(s\) \[1\]"),
        (lambda X: np.full_like(X, np.nan), None, "no observed value"),
        (lambda X: X, -np.ones(2000), "Negative values"),
        (lambda X: X, _with_value(np.ones(2000), 1200, np.nan), "NaN or infinity"),
        (lambda X: X, np.zeros(2000), "sums to zero"),
        (lambda X: X, _with_value(np.zeros(2000), 1999, 1.0), "Only 1 rows"),
    ],
)
def test_bad_values_raise_before_any_pass(client, data, monkeypatch, make_x, weights, match):
    _no_work(monkeypatch)
    Xd = da.from_array(make_x(data), chunks=500)
    wd = None if weights is None else da.from_array(weights, chunks=500)  # checked on workers
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with pytest.raises(ValueError, match=match):
            GaussianMixture(K, backend="numpy").fit(Xd, sample_weight=wd)


def test_object_array_that_is_not_numeric(client, data):
    X = data.astype(object)
    X[1234, 1] = "x"
    with pytest.raises(ValueError, match="could not be converted to float64"):
        GaussianMixture(K, backend="numpy").fit(da.from_array(X, chunks=500))


def test_in_memory_errors_match(client, data):
    """The Dask path's messages are the in-memory ones."""
    cases = [
        (_with_value(data, (3, 0), np.inf), None),
        (_with_value(data, (slice(None), 0), np.nan), None),
        (data, -np.ones(2000)),
        # feature 1 is observed only in rows of weight 0: never observed
        (_with_value(data, (slice(10, None), 1), np.nan), np.r_[np.zeros(10), np.ones(1990)]),
    ]
    for X, w in cases:
        with pytest.raises(ValueError) as mem:
            GaussianMixture(K, backend="numpy").fit(X, sample_weight=w)
        wd = None if w is None else da.from_array(w, chunks=700)
        with pytest.raises(ValueError) as dsk:
            GaussianMixture(K, backend="numpy").fit(da.from_array(X, chunks=700), sample_weight=wd)
        assert str(dsk.value) == str(mem.value)


def test_unknown_chunk_sizes(client, data):
    Xd = da.from_array(data, chunks=500)
    Xu = Xd[Xd[:, 0] > -np.inf]  # every row, but chunk sizes unknown
    assert np.isnan(Xu.chunks[0][0])
    init = initial_parameters(data, K, "full", seed=1)
    a = _fit(data, np.arange(2000.0) % 3, max_iter=5, tol=0, **init)
    b = _fit(Xu, np.arange(2000.0) % 3, max_iter=5, tol=0, **init)
    _assert_same_model(a, b)


def test_fastem_imports_without_dask():
    code = (
        # scikit-learn blocked too: it is optional, and importing it costs seconds
        "import sys; sys.modules['dask'] = None; sys.modules['sklearn'] = None\n"
        "import fastem\n"
        "assert 'dask' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "try:\n"
        "    import fastem.dask\n"
        "except ImportError as e:\n"
        "    assert 'fastem[dask]' in str(e), e\n"
        "else:\n"
        "    raise SystemExit('fastem.dask imported without dask')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# Run on the workers (by exec, so nothing of this module need be importable there):
# each pass of the numpy backend's full kernel takes 0.15 s longer, so that an
# iteration's chunk tasks are observably running when a worker is killed.
_SLOW_KERNEL = """
import time
import fastem.backends._numpy as kernels
if not hasattr(kernels, "_unslowed_em_pass_full"):
    kernels._unslowed_em_pass_full = kernels.em_pass_full
    def em_pass_full(*args):
        time.sleep(0.15)
        return kernels._unslowed_em_pass_full(*args)
    kernels.em_pass_full = em_pass_full
"""
_FAST_KERNEL = """
import fastem.backends._numpy as kernels
kernels.em_pass_full = getattr(kernels, "_unslowed_em_pass_full", kernels.em_pass_full)
"""


def _key_name(key) -> str:
    return str(key[0] if isinstance(key, tuple) else key)


def test_worker_killed_mid_fit(client, data):
    """A worker process killed while it runs a chunk task of an iteration and
    holds persisted chunks: the nanny restarts it, the lost chunks are
    recomputed from their lineage, and the model is the undisturbed one."""
    client.wait_for_workers(2)
    init = initial_parameters(data, K, "full", seed=1)
    Xd = da.from_array(data, chunks=250)
    n_chunks = Xd.numblocks[0]
    undisturbed = _fit(Xd, max_iter=6, tol=0, **init)
    armed, done = threading.Event(), threading.Event()
    killed: list[dict] = []

    def kill_a_busy_holder():
        armed.wait(60)
        while not done.is_set() and not killed:
            holding = client.has_what()
            for addr, keys in client.processing().items():
                running = [k for k in keys if _key_name(k).startswith("_chunk_stats")]
                held = [k for k in holding.get(addr, ()) if _key_name(k).startswith("_prepare")]
                if running and held:
                    pid = client.run(os.getpid, workers=[addr])[addr]
                    os.kill(pid, signal.SIGKILL)
                    killed.append({"addr": addr, "held": len(held)})
                    return
            time.sleep(0.01)

    def arm_after_first_iteration(event, **info):
        if event == "iteration" and info["n_iter"] == 1:
            armed.set()

    client.run(exec, _SLOW_KERNEL, {})
    killer = threading.Thread(target=kill_a_busy_holder, daemon=True)
    killer.start()
    try:
        with distributed.get_task_stream(client) as stream, fit_listener(arm_after_first_iteration):
            disturbed = _fit(Xd, max_iter=6, tol=0, **init)
    finally:
        done.set()
        armed.set()
        killer.join(30)
        client.run(exec, _FAST_KERNEL, {})
    assert killed, "no worker was killed"
    assert killed[0]["held"] > 0
    assert killed[0]["addr"] not in client.scheduler_info()["workers"]
    prepared = [t for t in stream.data if _key_name(t["key"]).startswith("_prepare_chunk")]
    # each chunk prepared once, then again each one lost with the killed worker
    assert len(prepared) >= n_chunks + killed[0]["held"]
    _assert_same_model(undisturbed, disturbed, rtol=0)
    client.wait_for_workers(2, timeout=30)  # the nanny brought it back


@pytest.mark.parametrize(
    ("x_dtype", "model_dtype"),
    [(np.float32, np.float32), (np.float64, np.float32), (np.float32, np.float64)],
)
def test_lazy_predict_dtypes_are_the_in_memory_ones(client, data, x_dtype, model_dtype):
    """The declared dtype of a lazy result is what it computes, and what the
    in-memory method returns (float32 only for float32 data under a float32 model)."""
    gm = _fit(data.astype(model_dtype), n_components=K, random_state=0)
    X = data.astype(x_dtype)
    Xd = da.from_array(X, chunks=(700, 2))
    for method in ("predict_proba", "score_samples"):
        out = fdask.predict_dask(gm, Xd, method)
        expected = getattr(gm, method)(X)
        assert out.dtype == expected.dtype == out.compute().dtype, method
