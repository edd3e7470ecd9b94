"""GaussianMixtureIC: model selection as an estimator.

:class:`GaussianMixtureIC` runs :func:`fastem.select_model` in ``fit`` and then
behaves as the selected :class:`~fastem.GaussianMixture` (``predict``,
``predict_proba``, ``score_samples``, ``sample``, ... and the fitted
``weights_``/``means_``/``covariances_``). Being an estimator, it can be cloned,
pickled, and placed in a scikit-learn ``Pipeline`` where the number of
components is not known in advance.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ._base import ESTIMATOR_BASES, allow_nan_tags
from .exceptions import NotFittedError
from .mixture import GaussianMixture
from .persistence import REQUIRED_ATTRIBUTES
from .selection import DEFAULT_COVARIANCE_TYPES, DEFAULT_FIT_SETTINGS, DEFAULT_INIT, select_model

__all__ = ["GaussianMixtureIC"]


class GaussianMixtureIC(*ESTIMATOR_BASES):
    """A Gaussian mixture whose number of components and covariance type are
    chosen by an information criterion.

    ``fit`` calls :func:`fastem.select_model` over the grid ``n_components`` x
    ``covariance_types`` (by default mclust's 14 models, all started from one
    shared hierarchical clustering tree and from emEM's short runs, and fitted
    with SQUAREM and the Aitken
    stopping rule at ``tol=1e-8`` so that the best candidates reach their
    maximum; the others, which cannot be among the best three, are only
    screened unless ``refine="all"``) and keeps the candidate with the lowest
    criterion. Every other method is
    the selected :class:`~fastem.GaussianMixture`'s.

    For the former behaviour (k-means starts, scikit-learn's fit settings), pass
    ``init_params="kmeans", tol=1e-3, stopping="absolute", acceleration=None,
    max_iter=100`` (:data:`fastem.selection.SCIKIT_LEARN_SETTINGS`).

    Parameters
    ----------
    n_components : int or iterable of int, default=(1, 2, ..., 9)
        Numbers of components to try; each must be at most the number of rows
        (with a positive weight) given to ``fit``.
    covariance_types : str or iterable of str, default='all'
        Covariance models to try: ``"all"`` (mclust's 14), or any of their names
        (any case) and scikit-learn's 'full', 'tied', 'diag', 'spherical'
        (aliases of VVV, EEE, VVI, VII); see :func:`fastem.select_model`.
    criterion : {'bic', 'aic', 'icl'}, default='bic'
        What ranks the candidates (lower is better); see :func:`fastem.select_model`.
    tol : float, default=1e-8
        Convergence threshold of every candidate (with ``stopping="aitken"``: the
        predicted remaining gain of the average log-likelihood).
    max_iter : int, default=1000
        Most EM passes per candidate fit.
    init_params : str, default='hc+emem'
        The shared starts (see :func:`fastem.select_model`): ``"hc"``, any
        :class:`~fastem.GaussianMixture` start, or several joined by ``+``.
    acceleration : {'squarem', 'anderson', 'qn', 'mpe', None}, default='squarem'
    stopping : {'aitken', 'relative', 'absolute'}, default='aitken'
        As in :class:`~fastem.GaussianMixture`.
    reg_covar, n_init, random_state, backend, n_threads
        As in :class:`~fastem.GaussianMixture`, the same for every candidate.
    refine : {'contenders', 'all'}, default='contenders'
        'contenders': every candidate is screened, and only those that could
        be among the best three are fitted to the final settings (``tol``,
        ``stopping``); 'all': every candidate is. See
        :func:`fastem.select_model`.
    hc_use : {'SVD', 'VARS', 'STD'}, default='SVD'
        The data the ``"hc"`` tree is built on (mclust's ``hcUse``; see
        :func:`fastem.select_model`).

    Attributes
    ----------
    best_estimator_ : GaussianMixture
        The selected, fitted mixture.
    n_components_ : int
        Its number of components.
    covariance_type_ : str
        Its covariance type.
    selection_ : ModelSelection
        The whole search: ``table`` (every candidate's BIC, AIC, ICL,
        log-likelihood, number of parameters, convergence), ``models_``,
        ``to_text()``.
    weights_, means_, covariances_, precisions_, precisions_cholesky_, converged_, n_iter_, \
lower_bound_, lower_bounds_, n_features_in_, backend_
        The selected mixture's, as in :class:`~fastem.GaussianMixture`.

    Examples
    --------
    >>> from fastem import GaussianMixtureIC
    >>> from fastem.datasets import make_mixture
    >>> X, _ = make_mixture(1500, 2, 3, random_state=2)
    >>> model = GaussianMixtureIC(n_components=range(1, 6), random_state=0).fit(X)
    >>> model.n_components_
    3
    """

    def __init__(
        self,
        n_components: int | Iterable[int] = (1, 2, 3, 4, 5, 6, 7, 8, 9),
        *,
        covariance_types: str | Iterable[str] = DEFAULT_COVARIANCE_TYPES,
        criterion: str = "bic",
        tol: float = DEFAULT_FIT_SETTINGS["tol"],
        reg_covar: float = 1e-6,
        max_iter: int = DEFAULT_FIT_SETTINGS["max_iter"],
        n_init: int = 1,
        init_params: str = DEFAULT_INIT,
        random_state=None,
        backend: str | None = None,
        n_threads: int | None = None,
        acceleration: str | None = DEFAULT_FIT_SETTINGS["acceleration"],
        stopping: str = DEFAULT_FIT_SETTINGS["stopping"],
        refine: str = "contenders",
        hc_use: str = "SVD",
    ) -> None:
        self.n_components = n_components
        self.covariance_types = covariance_types
        self.criterion = criterion
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.random_state = random_state
        self.backend = backend
        self.n_threads = n_threads
        self.acceleration = acceleration
        self.stopping = stopping
        self.refine = refine
        self.hc_use = hc_use

    def __sklearn_tags__(self):
        # Candidates are GaussianMixtures: NaN entries are missing values.
        return allow_nan_tags(super().__sklearn_tags__())

    # --------------------------------------------------------------------- fit
    def fit(self, X, y=None, sample_weight=None) -> GaussianMixtureIC:
        """Fit every candidate and keep the best by ``criterion``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            NaN entries are missing values.
        y : ignored
        sample_weight : array-like of shape (n_samples,), default=None
            Row weights; with weights the criteria use the weighted
            log-likelihood and the sum of the weights as the number of rows.

        Returns
        -------
        self : GaussianMixtureIC

        Raises
        ------
        ValueError
            On bad input or parameters (see :func:`fastem.select_model`), or when
            every candidate fails.
        """
        selection = select_model(
            X,
            self.n_components,
            self.covariance_types,
            criterion=self.criterion,
            sample_weight=sample_weight,
            n_init=self.n_init,
            random_state=self.random_state,
            tol=self.tol,
            reg_covar=self.reg_covar,
            max_iter=self.max_iter,
            init_params=self.init_params,
            backend=self.backend,
            n_threads=self.n_threads,
            acceleration=self.acceleration,
            stopping=self.stopping,
            refine=self.refine,
            hc_use=self.hc_use,
        )
        best = selection.best_
        self.selection_ = selection
        self.best_estimator_ = best
        self.n_components_ = best.n_components
        self.covariance_type_ = best.covariance_type
        # Every fitted attribute of a GaussianMixture (what a model file holds).
        for name in REQUIRED_ATTRIBUTES:
            setattr(self, name, getattr(best, name))
        # X's column names (a DataFrame's), which the selected mixture checks in predict.
        if hasattr(best, "feature_names_in_"):
            self.feature_names_in_ = best.feature_names_in_
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        return self

    def fit_predict(self, X, y=None, sample_weight=None) -> np.ndarray:
        """Fit, then return the selected mixture's labels for X.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : ignored
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        labels : ndarray of shape (n_samples,)
        """
        return self.fit(X, sample_weight=sample_weight).predict(X)

    # -------------------------------------------------- the selected mixture
    def _best(self) -> GaussianMixture:
        if not hasattr(self, "best_estimator_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with "
                "appropriate arguments before using this estimator."
            )
        return self.best_estimator_

    def predict(self, X) -> np.ndarray:
        """Labels by the selected mixture: :meth:`GaussianMixture.predict`."""
        return self._best().predict(X)

    def predict_proba(self, X) -> np.ndarray:
        """Responsibilities by the selected mixture: :meth:`GaussianMixture.predict_proba`."""
        return self._best().predict_proba(X)

    def score_samples(self, X) -> np.ndarray:
        """Log-density of each row: :meth:`GaussianMixture.score_samples`."""
        return self._best().score_samples(X)

    def score(self, X, y=None) -> float:
        """Average log-likelihood: :meth:`GaussianMixture.score`."""
        return self._best().score(X)

    def impute(self, X) -> np.ndarray:
        """Missing values filled in: :meth:`GaussianMixture.impute`."""
        return self._best().impute(X)

    def sample(self, n_samples: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Draws from the selected mixture: :meth:`GaussianMixture.sample`."""
        return self._best().sample(n_samples)

    def save(self, path) -> None:
        """Save the selected mixture to ``path`` (:meth:`GaussianMixture.save`).

        The file is the selected :class:`~fastem.GaussianMixture`'s model file:
        :func:`fastem.load` returns that GaussianMixture (its ``n_components``
        and ``covariance_type`` are the selected ones, and its predictions
        are the same), not a GaussianMixtureIC. The search (``selection_``, its
        table and the other candidates) and this estimator's own parameters
        are not in the file; pickle the estimator to keep those.

        Parameters
        ----------
        path : str or os.PathLike
            The file to write, exactly as given.

        Raises
        ------
        NotFittedError
            If ``fit`` has not been called.
        """
        self._best().save(path)

    def bic(self, X) -> float:
        """The selected mixture's BIC on X: :meth:`GaussianMixture.bic`."""
        return self._best().bic(X)

    def aic(self, X) -> float:
        """The selected mixture's AIC on X: :meth:`GaussianMixture.aic`."""
        return self._best().aic(X)
