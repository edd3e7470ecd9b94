"""fastem.plotting: every figure renders to PNG and shows what it should."""

from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Ellipse  # noqa: E402

from fastem import GaussianMixture  # noqa: E402
from fastem.datasets import make_mixture  # noqa: E402
from fastem.plotting import (  # noqa: E402
    plot_clusters,
    plot_lower_bound,
    plot_segmentation,
    plot_selection,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _render(fig, tmp_path, name="fig.png") -> bytes:
    path = tmp_path / name
    fig.savefig(path)
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 5_000  # a real picture, not an empty canvas
    return data


def _ellipses(ax) -> list[Ellipse]:
    return [p for p in ax.patches if isinstance(p, Ellipse)]


@pytest.fixture(scope="module")
def data3d():
    X, _ = make_mixture(600, 3, 3, random_state=0)
    return X


def _fit(X, k, ct):
    return GaussianMixture(k, covariance_type=ct, random_state=0, backend="numpy").fit(X)


@pytest.mark.parametrize("ct", ["full", "tied", "diag", "spherical"])
@pytest.mark.parametrize("projection", [None, "pca", "matrix"])
def test_plot_clusters_one_ellipse_per_component(tmp_path, data3d, ct, projection):
    model = _fit(data3d, 3, ct)
    if projection == "matrix":
        projection = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, -1.0]]) / np.sqrt(2)
    fig = plot_clusters(model, data3d, dims=(0, 2), projection=projection)
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    assert len(_ellipses(ax)) == model.n_components
    _render(fig, tmp_path)


def test_plot_clusters_ellipses_are_the_projected_covariances(data3d):
    # diag covariances on features (0, 2): axes are 2 * n_std * the standard deviations.
    model = _fit(data3d, 3, "diag")
    fig = plot_clusters(model, data3d, dims=(0, 2), n_std=1.5)
    for k, ellipse in enumerate(_ellipses(fig.axes[0])):
        np.testing.assert_allclose(ellipse.center, model.means_[k, [0, 2]])
        expected = np.sort(2 * 1.5 * np.sqrt(model.covariances_[k, [0, 2]]))
        np.testing.assert_allclose(np.sort([ellipse.width, ellipse.height]), expected)


def test_plot_clusters_matrix_projection_matches_dims(data3d):
    model = _fit(data3d, 3, "full")
    by_dims = _ellipses(plot_clusters(model, data3d, dims=(1, 2)).axes[0])
    P = np.eye(3)[:, [1, 2]]
    by_matrix = _ellipses(plot_clusters(model, data3d, projection=P).axes[0])
    for a, b in zip(by_dims, by_matrix, strict=True):
        np.testing.assert_allclose(a.center, b.center)
        np.testing.assert_allclose([a.width, a.height, a.angle], [b.width, b.height, b.angle])


def test_plot_clusters_pca_ellipses_follow_the_data():
    # A long thin cloud along the diagonal of 4-D space: PC1 carries nearly all of it.
    rng = np.random.default_rng(0)
    t = rng.standard_normal(500)
    X = np.outer(t * 5, np.ones(4) / 2) + 0.1 * rng.standard_normal((500, 4))
    model = _fit(X, 1, "full")
    (ellipse,) = _ellipses(plot_clusters(model, X, projection="pca").axes[0])
    long, short = max(ellipse.width, ellipse.height), min(ellipse.width, ellipse.height)
    np.testing.assert_allclose(long, 2 * 2 * 5, rtol=0.15)
    assert short < long / 20


def test_plot_clusters_into_existing_axes_and_subsampling(tmp_path, data3d):
    model = _fit(data3d, 2, "spherical")
    fig = Figure()
    ax = fig.subplots()
    assert plot_clusters(model, data3d, ax=ax, max_points=100) is fig
    (points, _means) = ax.collections
    assert len(points.get_offsets()) == 100
    _render(fig, tmp_path)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"dims": (0, 0)}, "two different feature indices"),
        ({"dims": (0, 5)}, "two different feature indices"),
        ({"projection": "tsne"}, "'pca' or a"),
        ({"projection": np.ones((2, 2))}, r"shape \(3, 2\)"),
    ],
)
def test_plot_clusters_bad_arguments(data3d, kwargs, match):
    model = _fit(data3d, 2, "diag")
    with pytest.raises(ValueError, match=match):
        plot_clusters(model, data3d, **kwargs)


def test_plot_clusters_wrong_features(data3d):
    model = _fit(data3d, 2, "diag")
    with pytest.raises(ValueError, match=r"\(n_samples, 3\)"):
        plot_clusters(model, data3d[:, :2])


def test_plot_lower_bound_from_model_and_list(tmp_path, data3d):
    model = _fit(data3d, 3, "full")
    fig = plot_lower_bound(model)
    (line,) = fig.axes[0].lines
    np.testing.assert_allclose(line.get_ydata(), model.lower_bounds_)
    np.testing.assert_array_equal(line.get_xdata(), np.arange(1, model.n_iter_ + 1))
    assert "converged" in fig.axes[0].get_title()
    _render(fig, tmp_path)
    fig = plot_lower_bound([-3.0, -2.5, -2.4])
    assert list(fig.axes[0].lines[0].get_ydata()) == [-3.0, -2.5, -2.4]
    with pytest.raises(ValueError, match="no lower bounds"):
        plot_lower_bound([])


def _table():
    rows = []
    for ct, slope in (("full", 1.0), ("diag", 2.0), ("spherical", 3.0)):
        for k in (1, 2, 3, 4):
            value = 100.0 - 10 * k + slope * k * k
            rows.append(
                {
                    "n_components": k,
                    "covariance_type": ct,
                    "bic": value,
                    "aic": value - 5,
                    "icl": value + 5,
                    "log_likelihood": -value,
                    "n_parameters": k * 3,
                    "converged": True,
                    "n_iter": 5,
                    "error": None,
                }
            )
    rows.append({"n_components": 5, "covariance_type": "full", "bic": None, "error": "failed"})
    return rows


def test_plot_selection_one_line_per_covariance_type(tmp_path):
    fig = plot_selection(_table())
    (ax,) = fig.axes
    assert [line.get_label() for line in ax.lines] == ["full", "diag", "spherical"]
    full = ax.lines[0]
    # The failed k=5 row is a gap in its line (mclust's NA), not a point.
    assert list(full.get_xdata()) == [1, 2, 3, 4, 5]
    assert np.isnan(full.get_ydata()[-1]) and np.isfinite(full.get_ydata()[:4]).all()
    assert "BIC" in ax.get_ylabel() and "lower is better" in ax.get_ylabel()
    # The star marks the overall minimum: full at k = 4 (100 - 40 + 16 = 76) vs k = 5 missing.
    star = ax.collections[-1].get_offsets()[0]
    np.testing.assert_allclose(star, [4, 76.0])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["full", "diag", "spherical"]
    _render(fig, tmp_path)


def test_plot_selection_mclust_sign_negates_and_stars_the_maximum(tmp_path):
    fig = plot_selection(_table(), sign="mclust")
    (ax,) = fig.axes
    ours = plot_selection(_table()).axes[0]
    for line, mine in zip(ax.lines, ours.lines, strict=True):
        np.testing.assert_array_equal(line.get_ydata(), -mine.get_ydata())
    np.testing.assert_allclose(ax.collections[-1].get_offsets()[0], [4, -76.0])
    assert "larger is better" in ax.get_ylabel()
    with pytest.raises(ValueError, match="sign"):
        plot_selection(_table(), sign="R")
    _render(fig, tmp_path)


def test_plot_selection_stars_the_proper_best_not_a_degenerate_one(tmp_path):
    # select_model ranks a degenerate candidate (mclust's NA) after every proper one; the
    # star and title must show that choice, not the table's lowest value (on iris the
    # plot starred VEE,9 while best_params_ was VEV,2).
    table = _table()
    table[3]["degenerate"] = True  # full, k = 4: the lowest BIC (76)
    (ax,) = plot_selection(table).axes
    # next best: full at k = 3 (100 - 30 + 9 = 79)
    np.testing.assert_allclose(ax.collections[-1].get_offsets()[0], [3, 79.0])
    assert "full, n_components = 3" in ax.get_title()
    every = [dict(row, degenerate=True) for row in _table()]
    (ax,) = plot_selection(every).axes  # all degenerate: the lowest, as select_model
    np.testing.assert_allclose(ax.collections[-1].get_offsets()[0], [4, 76.0])
    _render(ax.figure, tmp_path)


def test_plot_selection_of_a_14_model_search(tmp_path):
    from fastem import select_model
    from fastem.selection import ALL_MODELS

    X, _ = make_mixture(120, 2, 2, random_state=0)
    selection = select_model(X, [1, 2], "all", random_state=0, max_iter=50)
    fig = plot_selection(selection)
    (ax,) = fig.axes
    assert [line.get_label() for line in ax.lines] == list(ALL_MODELS)
    assert len({line.get_marker() for line in ax.lines}) == 14  # every model its own symbol
    best = selection.table[selection.best_index_]
    np.testing.assert_allclose(
        ax.collections[-1].get_offsets()[0], [best["n_components"], best["bic"]]
    )
    assert best["covariance_type"] in ax.get_title()
    _render(fig, tmp_path)


def test_plot_selection_uses_the_selection_criterion(tmp_path):
    class Selection:
        table = _table()
        criterion = "aic"

    fig = plot_selection(Selection())
    assert "AIC" in fig.axes[0].get_ylabel()
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata()[0], 100 - 10 + 1 - 5)
    fig = plot_selection(Selection(), criterion="icl")
    assert "ICL" in fig.axes[0].get_ylabel()
    with pytest.raises(ValueError, match="no successful fit"):
        plot_selection([{"n_components": 1, "covariance_type": "full", "error": "x"}])


@pytest.mark.parametrize("model", ["EEI", "VEV", "EVE"])
def test_plot_clusters_of_mclust_models(data3d, model):
    fitted = GaussianMixture(3, covariance_type=model, random_state=0, max_iter=20).fit(data3d)
    fig = plot_clusters(fitted, data3d, dims=(0, 1))
    ellipses = _ellipses(fig.axes[0])
    assert len(ellipses) == 3
    cov = np.asarray(fitted.covariances_)
    assert cov.ndim == (2 if model == "EEI" else 3)  # mclust's layouts: (k, d) or (k, d, d)
    for k, ellipse in enumerate(ellipses):
        full = np.diag(cov[k]) if cov.ndim == 2 else cov[k]
        expected = 2 * 2.0 * np.sqrt(np.linalg.eigvalsh(full[:2, :2]))
        np.testing.assert_allclose(np.sort([ellipse.width, ellipse.height]), expected)


def test_plot_segmentation(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    labels = rng.integers(0, 4, (30, 40))
    fig = plot_segmentation(image, labels, titles=("a", "b"))
    assert [ax.get_title() for ax in fig.axes] == ["a", "b"]
    assert all(len(ax.images) == 1 for ax in fig.axes)
    assert fig.axes[1].images[0].get_array().shape == (30, 40)
    _render(fig, tmp_path)
    with pytest.raises(ValueError, match="differ in size"):
        plot_segmentation(image, labels[:10])


def test_missing_matplotlib_says_how_to_install(monkeypatch, data3d):
    model = _fit(data3d, 2, "diag")
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import now fails
    with pytest.raises(ImportError, match=r'pip install "fastem\[plot\]"'):
        plot_clusters(model, data3d)


def test_plot_states_bands_follow_the_decoded_path(tmp_path):
    from matplotlib.collections import PolyCollection

    from fastem.hmm import GaussianHMM
    from fastem.plotting import plot_states

    rng = np.random.default_rng(0)
    states = np.repeat([0, 1, 0, 2, 1], [40, 30, 20, 50, 30])
    X = rng.normal(size=(states.size, 2)) * 0.3 + np.array([[0, 0], [3, 0], [0, 3]])[states]
    lengths = [60, states.size - 60]
    model = GaussianHMM(3, covariance_type="diag", n_iter=30, random_state=0).fit(X, lengths)
    fig = plot_states(model, X, lengths, sequence=1)
    _render(fig, tmp_path)
    top, bottom = fig.axes[:2]
    _, path = model.decode(X[60:])
    runs = 1 + np.count_nonzero(np.diff(path))
    bands = [p for p in top.patches if p.get_alpha() == 0.25]
    assert len(bands) == runs
    assert sum(int(round(b.get_width())) for b in bands) == X.shape[0] - 60
    layers = [c for c in bottom.collections if isinstance(c, PolyCollection)]
    assert len(layers) == 3  # one stacked layer per state
    top_edge = layers[-1].get_paths()[0].vertices[:, 1].max()
    assert top_edge == pytest.approx(1.0)  # posteriors sum to 1


def test_plot_states_bad_arguments():
    from fastem.hmm import GaussianHMM
    from fastem.plotting import plot_states

    X = np.random.default_rng(1).normal(size=(50, 1))
    model = GaussianHMM(2, n_iter=5, random_state=0).fit(X)
    with pytest.raises(ValueError, match="sequence must lie"):
        plot_states(model, X, [50], sequence=1)
    with pytest.raises(ValueError, match="lengths sum to 40, but X has 50 samples"):
        plot_states(model, X, [20, 20])
    # a 0 in lengths is an empty sequence, as the models read it: the others draw
    fig = plot_states(model, X, [0, 50], sequence=1)
    assert len(fig.axes[0].lines) == 1
    with pytest.raises(ValueError, match="sequence 0 has no frames"):
        plot_states(model, X, [0, 50], sequence=0)
