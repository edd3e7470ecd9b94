"""Matplotlib figures of fitted mixtures (optional: ``pip install "fastem[plot]"``).

Every function returns a :class:`matplotlib.figure.Figure`. Without ``ax`` the
figure is created directly (not through ``pyplot``), so nothing opens a window,
no global figure list grows, and it works on any backend, headless included;
save it with ``fig.savefig("out.png")``. With ``ax`` the plot is drawn into
that axes and its figure is returned.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

__all__ = [
    "plot_clusters",
    "plot_lower_bound",
    "plot_selection",
    "plot_segmentation",
    "plot_states",
]

_MISSING_MATPLOTLIB = (
    'fastem.plotting needs matplotlib, which is not installed: pip install "fastem[plot]"'
)


def _figure(ax, figsize: tuple[float, float], ncols: int = 1, nrows: int = 1, **subplots):
    """``(figure, axes)``: a new headless figure, or ``ax``'s own."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(_MISSING_MATPLOTLIB) from exc
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(nrows, ncols, **subplots)
    return fig, axes


def _colors(n: int) -> np.ndarray:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20" if n <= 20 else "turbo"]
    if n > 20:
        return cmap(np.linspace(0.0, 1.0, n))
    return cmap(np.arange(n) % cmap.N)


def _full_covariances(model) -> np.ndarray:
    """The fitted covariances of ``model`` as ``(n_components, d, d)`` matrices, any type
    (scikit-learn's four layouts, or an mclust model's (k, d) or (k, d, d))."""
    from ._covariance import layout

    cov = np.asarray(model.covariances_, dtype=np.float64)
    k, d = np.shape(model.means_)
    ct = layout(model.covariance_type)
    if ct == "full":
        return cov
    if ct == "tied":
        return np.broadcast_to(cov, (k, d, d)).copy()
    if ct == "diag":
        return cov[:, :, None] * np.eye(d)
    if ct == "spherical":
        return cov[:, None, None] * np.eye(d)
    raise ValueError(f"unknown covariance_type {ct!r}")


def _projection(X: np.ndarray, dims, projection) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(P, centre, axis labels)``: points are plotted as ``(x - centre) @ P``."""
    d = X.shape[1]
    if projection is None:
        dims = tuple(int(i) for i in dims)
        if len(dims) != 2 or dims[0] == dims[1] or not all(0 <= i < d for i in dims):
            raise ValueError(f"dims must be two different feature indices in [0, {d}), got {dims}")
        return np.eye(d)[:, list(dims)], np.zeros(d), [f"feature {i}" for i in dims]
    if isinstance(projection, str):
        if projection != "pca":
            raise ValueError(f"projection must be 'pca' or a (d, 2) matrix, got {projection!r}")
        complete = X[~np.isnan(X).any(axis=1)]  # NaN (missing values) would stop the SVD
        if complete.shape[0] < 2:  # one row has no principal axes (and one singular value)
            raise ValueError(
                "projection='pca' needs rows without missing values (NaN), at least 2, got "
                f"{complete.shape[0]}: plot two features with dims=, or give a projection matrix"
            )
        centre = complete.mean(axis=0)
        _, s, vt = np.linalg.svd(complete - centre, full_matrices=False)
        share = s**2 / max(float((s**2).sum()), np.finfo(float).tiny)
        labels = [f"PC{i + 1} ({share[i]:.0%} of variance)" for i in range(2)]
        return vt[:2].T, centre, labels
    P = np.asarray(projection, dtype=np.float64)
    if P.shape != (d, 2):
        raise ValueError(f"a projection matrix must have shape ({d}, 2), got {P.shape}")
    return P, np.zeros(d), ["projection 1", "projection 2"]


def plot_clusters(
    model,
    X,
    *,
    dims: Sequence[int] = (0, 1),
    projection=None,
    ax=None,
    n_std: float = 2.0,
    max_points: int = 20_000,
    random_state: int = 0,
):
    """Scatter X coloured by predicted component, with each component's covariance ellipse.

    Parameters
    ----------
    model : fitted GaussianMixture or GaussianMixtureIC
    X : array-like of shape (n_samples, n_features)
        NaN (missing values) are allowed: a row is drawn where its two plotted
        features are observed (with ``projection``, where all are; the PCA
        comes from the complete rows).
    dims : pair of int, default=(0, 1)
        The two features to plot, when ``projection`` is None.
    projection : 'pca' or array-like of shape (n_features, 2), default=None
        Project onto the first two principal components of X, or onto the
        columns of the given matrix. Means and covariances are projected the
        same way (``P.T @ cov @ P``), so ellipses are the exact 2-D marginals.
    ax : matplotlib Axes, default=None
    n_std : float, default=2.0
        Ellipse half-axes in standard deviations.
    max_points : int, default=20000
        Plot at most this many rows (a seeded random subset); ellipses always
        come from the model.
    random_state : int, default=0
        Seed of the subset.

    Returns
    -------
    fig : matplotlib Figure
        One :class:`matplotlib.patches.Ellipse` per component in the axes.
    """
    if not hasattr(model, "means_"):  # any fitted mixture: GaussianMixture, GaussianMixtureIC
        from .exceptions import NotFittedError

        raise NotFittedError(
            f"This {type(model).__name__} instance is not fitted yet; fit it before plotting."
        )
    if getattr(model, "feature_names_in_", None) is not None:
        # X's columns are checked here; predict below then sees a plain array on purpose
        from ._validation import check_feature_names

        check_feature_names(model, X, reset=False)
    model = getattr(model, "best_estimator_", model)  # GaussianMixtureIC: its selected mixture
    X = np.asarray(X, dtype=np.float64)
    means = np.asarray(model.means_, dtype=np.float64)
    k, d = means.shape
    if X.ndim != 2 or X.shape[1] != d:
        raise ValueError(f"X must have shape (n_samples, {d}) for this model, got {X.shape}")
    if d < 2:
        raise ValueError("plot_clusters needs at least 2 features")
    fig, ax = _figure(ax, (6.0, 5.0))
    from matplotlib.patches import Ellipse

    if X.shape[0] > max_points:
        rows = np.random.default_rng(random_state).choice(X.shape[0], max_points, replace=False)
        X = X[np.sort(rows)]
    P, centre, labels = _projection(X, dims, projection)
    colors = _colors(k)
    if projection is None:  # the two features as they are: NaN elsewhere does not hide a row
        Y = X[:, np.flatnonzero(P.any(axis=1))] @ P[P.any(axis=1)]
    else:  # a row with NaN has no projection (NaN): not drawn
        Y = (X - centre) @ P
    with warnings.catch_warnings():
        # the names were checked above, on the caller's X
        warnings.filterwarnings("ignore", "X does not have valid feature names", UserWarning)
        pred = model.predict(X)
    ax.scatter(Y[:, 0], Y[:, 1], c=colors[pred], s=4, alpha=0.5, linewidths=0, rasterized=True)

    centres = (means - centre) @ P
    cov2 = np.einsum("di,kde,ej->kij", P, _full_covariances(model), P)
    for j in range(k):
        vals, vecs = np.linalg.eigh(cov2[j])
        vals = np.clip(vals, 0.0, None)
        angle = np.degrees(np.arctan2(vecs[1, -1], vecs[0, -1]))
        ax.add_patch(
            Ellipse(
                tuple(centres[j]),
                width=2 * n_std * np.sqrt(vals[-1]),
                height=2 * n_std * np.sqrt(vals[0]),
                angle=angle,
                facecolor="none",
                edgecolor=colors[j],
                linewidth=2,
                gid=f"component-{j}",
            )
        )
    ax.scatter(centres[:, 0], centres[:, 1], c="black", marker="x", s=40, zorder=3)
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.set_title(f"{k} components ({model.covariance_type}), {n_std:g}σ ellipses")
    ax.autoscale_view()
    return fig


def plot_lower_bound(model_or_bounds, *, ax=None):
    """The EM lower bound (average log-likelihood) at each iteration.

    Parameters
    ----------
    model_or_bounds : fitted GaussianMixture or sequence of float
        A model (its ``lower_bounds_`` are plotted: one per EM iteration, or
        after :meth:`~fastem.GaussianMixture.partial_fit` one per batch, each
        batch's average log-likelihood) or the bounds themselves.
    ax : matplotlib Axes, default=None

    Returns
    -------
    fig : matplotlib Figure
    """
    bounds = getattr(model_or_bounds, "lower_bounds_", model_or_bounds)
    bounds = np.asarray(bounds, dtype=np.float64).ravel()
    if bounds.size == 0:
        raise ValueError("no lower bounds to plot (was the model fitted with max_iter=0?)")
    fig, ax = _figure(ax, (6.0, 4.0))
    from matplotlib.ticker import MaxNLocator

    ax.plot(np.arange(1, bounds.size + 1), bounds, marker="o", markersize=3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("lower bound (average log-likelihood)")
    if hasattr(model_or_bounds, "n_batches_"):  # partial_fit: one bound per batch
        ax.set_xlabel("batch (partial_fit)")
        ax.set_title("each batch's average log-likelihood before its step")
        return fig
    ax.set_xlabel("EM iteration")
    converged = getattr(model_or_bounds, "converged_", None)
    note = "" if converged is None else (" (converged)" if converged else " (not converged)")
    ax.set_title(f"EM lower bound{note}")
    return fig


# mclust's BIC plot draws each of its 14 models with its own symbol and colour.
_MODEL_MARKERS = ("o", "s", "^", "+", "D", "x", "v", "*", "<", "P", ">", "X", "h", "p")


def plot_selection(selection, *, criterion: str | None = None, sign: str = "sklearn", ax=None):
    """mclust's BIC plot: a criterion against n_components, one line per covariance model.

    Parameters
    ----------
    selection : result of :func:`fastem.select_model`, a fitted GaussianMixtureIC, or a table
        An object with a ``table`` (list of dicts with ``n_components``,
        ``covariance_type`` and one key per criterion), a
        :class:`~fastem.GaussianMixtureIC` (its ``selection_``), or that list itself.
        A candidate with an ``error`` or no value is a gap in its line (mclust's
        NA).
    criterion : {'bic', 'aic', 'icl'}, default=None
        What to plot: the selection's own criterion when None, else 'bic'.
    sign : {'sklearn', 'mclust'}, default='sklearn'
        'sklearn' plots scikit-learn's sign (``BIC = -2 log L + p log n``, lower
        is better); 'mclust' its negation, as mclust's ``plot.mclustBIC``
        (``2 log L - p log n``, larger is better).
    ax : matplotlib Axes, default=None

    Returns
    -------
    fig : matplotlib Figure
        One line per covariance model, each with its own marker, in the order
        searched; the legend names the models; the best point is starred.
    """
    if hasattr(type(selection), "fit") and not hasattr(selection, "table"):  # an estimator
        if not hasattr(selection, "selection_"):
            from .exceptions import NotFittedError

            raise NotFittedError(
                f"This {type(selection).__name__} instance is not fitted yet; fit it first."
            )
        selection = selection.selection_  # GaussianMixtureIC: its search
    table = getattr(selection, "table", selection)
    if criterion is None:
        criterion = getattr(selection, "criterion", None) or "bic"
    criterion = str(criterion).lower()
    if sign not in ("sklearn", "mclust"):
        raise ValueError(f"sign must be 'sklearn' or 'mclust', got {sign!r}")
    factor = 1.0 if sign == "sklearn" else -1.0
    ks = sorted({int(row["n_components"]) for row in table})
    models = list(dict.fromkeys(row["covariance_type"] for row in table))
    values = np.full((len(models), len(ks)), np.nan)
    degenerate = np.zeros((len(models), len(ks)), dtype=bool)
    for row in table:
        value = row.get(criterion)
        if row.get("error") or value is None or not np.isfinite(value):
            continue
        i, j = models.index(row["covariance_type"]), ks.index(int(row["n_components"]))
        values[i, j] = factor * value
        degenerate[i, j] = bool(row.get("degenerate"))
    if np.isnan(values).all():
        raise ValueError(f"the selection has no successful fit with a {criterion!r} value to plot")
    fig, ax = _figure(ax, (7.0, 4.5))
    colors = _colors(len(models))
    for i, model in enumerate(models):
        ax.plot(
            ks, values[i], marker=_MODEL_MARKERS[i % len(_MODEL_MARKERS)], color=colors[i],
            label=model,
        )  # fmt: skip
    # The best point: lowest with scikit-learn's sign, highest with mclust's.
    # As select_model chooses: a degenerate candidate only when every candidate is one.
    eligible = ~np.isnan(values) & ~degenerate
    if not eligible.any():
        eligible = ~np.isnan(values)
    flat = np.where(eligible, factor * values, np.inf)
    i, j = np.unravel_index(int(np.argmin(flat)), flat.shape)
    best = (ks[j], values[i, j])
    # A scatter (not a line) so the axes hold exactly one line per covariance model.
    ax.scatter([best[0]], [best[1]], marker="*", s=250, c="gold", edgecolors="black", zorder=3)
    better = "larger" if factor < 0 else "lower"
    ax.set_xlabel("n_components")
    ax.set_ylabel(f"{criterion.upper()} ({better} is better)")
    ax.set_title(
        f"Model selection: best {criterion.upper()} at {models[i]}, n_components = {best[0]}"
    )
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(title="model", ncols=2 if len(models) > 7 else 1, fontsize="small")
    return fig


def plot_segmentation(
    image,
    segmented,
    *,
    titles: Sequence[str] = ("original", "segmented"),
    labels: bool | None = None,
):
    """An image beside its segmentation.

    Parameters
    ----------
    image : array-like of shape (height, width) or (height, width, channels)
        The original (uint8, or floats in [0, 1]; a PIL image works too). A grey
        image is drawn on the full grey scale of its type (0-255, or 0-1), not
        stretched to its own darkest and lightest pixels.
    segmented : array-like
        The segmented image of the same height and width: colours, or a 2-D
        map of integer labels (drawn with a qualitative colour map).
    titles : pair of str, default=('original', 'segmented')
    labels : bool or None, default=None
        Whether a 2-D ``segmented`` holds labels (True) or grey levels, the
        segmentation of a grey image, drawn on the original's grey scale
        (False). None: labels if its values are integers.

    Returns
    -------
    fig : matplotlib Figure
        Two axes, one image each.
    """
    image = np.asarray(image)
    segmented = np.asarray(segmented)
    if image.shape[:2] != segmented.shape[:2]:
        raise ValueError(
            f"image and segmentation differ in size: {image.shape[:2]} and {segmented.shape[:2]}"
        )
    h, w = image.shape[:2]
    fig, axes = _figure(None, (10.0, max(2.0, 5.0 * h / max(w, 1)) + 0.5), ncols=2)
    if labels is None:
        labels = segmented.dtype.kind in "iub"
    for ax, img, title in zip(axes, (image, segmented), titles, strict=True):
        if img.ndim == 2 and labels and img is segmented:
            ax.imshow(img, cmap="tab20", interpolation="nearest")
        elif img.ndim == 2:  # grey levels: one fixed scale, so both panels compare
            lo, hi = {"u1": (0, 255), "f": (0.0, 1.0)}.get(
                "u1" if img.dtype == np.uint8 else img.dtype.kind, (None, None)
            )  # another integer type: its own range
            ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        else:
            ax.imshow(img, interpolation="nearest")
        ax.set_title(title)
        ax.set_axis_off()
    return fig


def plot_states(model, X, lengths=None, *, sequence: int = 0, max_features: int = 4):
    """One sequence of a fitted hidden Markov model: its data over decoded states,
    and the state posteriors.

    Top: up to ``max_features`` columns of the sequence against time, on a
    background coloured by the decoded state path (``model.decode``: Viterbi or
    MAP, as the model's ``algorithm``). Bottom: the smoothed posteriors
    ``model.predict_proba`` stacked (they sum to 1 at every frame).

    Parameters
    ----------
    model : fitted model of :mod:`fastem.hmm`
    X : array-like of shape (n_samples, n_features)
        The sequences, as given to the model's ``fit``; NaN is drawn as a gap.
    lengths : array-like of int, default=None
        Sequence lengths (None: one sequence).
    sequence : int, default=0
        Which sequence to draw.
    max_features : int, default=4

    Returns
    -------
    fig : matplotlib Figure
    """
    from .hmm._base import _offsets

    X = np.asarray(X)
    # the models' own checks of lengths; a 0 is a sequence with no frames, as in the models
    offsets = _offsets(lengths, X.shape[0], allow_empty=True)
    if not 0 <= sequence < offsets.size - 1:
        raise ValueError(f"sequence must lie in [0, {offsets.size - 1}), got {sequence}")
    xs = X[offsets[sequence] : offsets[sequence + 1]]
    if xs.shape[0] == 0:
        raise ValueError(f"sequence {sequence} has no frames to draw (its length is 0)")
    _, states = model.decode(xs)
    posteriors = model.predict_proba(xs)
    k = posteriors.shape[1]
    colors = _colors(k)
    fig, (top, bottom) = _figure(None, (8.0, 5.0), nrows=2, sharex=True, height_ratios=(3, 2))
    t = np.arange(xs.shape[0])
    # the decoded path as runs of constant state, each a coloured band
    change = np.flatnonzero(np.diff(states)) + 1
    from matplotlib.patches import Rectangle

    band = top.get_xaxis_transform()  # x in frames, y from 0 to 1 of the axes
    for a, b in zip(np.r_[0, change], np.r_[change, states.size], strict=True):
        top.add_patch(
            Rectangle((a - 0.5, 0.0), b - a, 1.0, transform=band, color=colors[states[a]],
                      alpha=0.25, lw=0)
        )  # fmt: skip
    for j in range(min(max_features, xs.shape[1])):
        top.plot(t, xs[:, j], lw=0.8, color="0.15" if j == 0 else None, label=f"x{j}")
    top.set_ylabel("data")
    top.set_title(f"sequence {sequence}: data over the decoded states ({k} states)")
    if xs.shape[1] > 1:
        top.legend(loc="upper right", fontsize="small", ncols=min(4, xs.shape[1]))
    bottom.stackplot(t, posteriors.T, colors=colors, labels=[f"state {i}" for i in range(k)])
    bottom.set_ylim(0.0, 1.0)
    bottom.set_xlim(-0.5, xs.shape[0] - 0.5)
    bottom.set_xlabel("frame")
    bottom.set_ylabel("P(state | sequence)")
    bottom.legend(loc="upper right", fontsize="small", ncols=min(k, 6))
    return fig
