"""Imputation of missing values (NaN) by a Gaussian mixture, as a transformer.

:class:`GaussianMixtureImputer` fits a :class:`~fastem.GaussianMixture` to
incomplete data by EM (no row is dropped, nothing is filled in beforehand) and
replaces each NaN by its conditional expectation given the observed values of
its row. It has ``fit``/``transform``, so it drops into a scikit-learn
``Pipeline`` where ``SimpleImputer`` or ``IterativeImputer`` would go.
"""

from __future__ import annotations

import numpy as np

from ._base import TRANSFORMER_BASES, allow_nan_tags
from ._validation import check_array, check_feature_names, nullable_to_nan, string_column_names
from .exceptions import NotFittedError
from .mixture import GaussianMixture

__all__ = ["GaussianMixtureImputer"]


class GaussianMixtureImputer(*TRANSFORMER_BASES):
    """Fill in missing values with their expectation under a Gaussian mixture.

    Parameters
    ----------
    n_components : int, default=1
        Mixture components. One component is the classic multivariate-normal
        EM imputation; more capture clustered data.
    covariance_type : {'full', 'tied', 'diag', 'spherical'}, default='full'
        'diag' and 'spherical' components impute each missing value by the
        responsibility-weighted component means (no regression on the row's
        observed values within a component).
    tol, reg_covar, max_iter, n_init, init_params, random_state, backend, n_threads
        As in :class:`~fastem.GaussianMixture`.

    Attributes
    ----------
    mixture_ : GaussianMixture
        The fitted mixture.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Column names of X in ``fit``, when it had string column names (a
        pandas DataFrame, say); used by :meth:`get_feature_names_out`.
    n_iter_ : int
        EM iterations of the fit.

    Examples
    --------
    >>> import numpy as np
    >>> from fastem.impute import GaussianMixtureImputer
    >>> X = np.array([[1.0, 2.0], [2.0, np.nan], [3.0, 6.1], [4.0, 8.0], [np.nan, 9.9]])
    >>> GaussianMixtureImputer(random_state=0).fit_transform(X)[1].round(1)
    array([2., 4.])
    """

    def __init__(
        self,
        n_components: int = 1,
        *,
        covariance_type: str = "full",
        tol: float = 1e-3,
        reg_covar: float = 1e-6,
        max_iter: int = 100,
        n_init: int = 1,
        init_params: str = "kmeans",
        random_state=None,
        backend: str | None = None,
        n_threads: int | None = None,
    ) -> None:
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.random_state = random_state
        self.backend = backend
        self.n_threads = n_threads

    def __sklearn_tags__(self):
        tags = allow_nan_tags(super().__sklearn_tags__())
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    def fit(self, X, y=None, sample_weight=None) -> GaussianMixtureImputer:
        """Fit the mixture to X (NaN entries are missing values).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            NaN, or ``pd.NA`` in pandas' nullable columns, marks a missing value.
        y : ignored
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        self : GaussianMixtureImputer
        """
        mixture = GaussianMixture(
            self.n_components,
            covariance_type=self.covariance_type,
            tol=self.tol,
            reg_covar=self.reg_covar,
            max_iter=self.max_iter,
            n_init=self.n_init,
            init_params=self.init_params,
            random_state=self.random_state,
            backend=self.backend,
            n_threads=self.n_threads,
        )
        # The names are this estimator's to check; the inner mixture sees plain arrays.
        named = string_column_names(X) is not None
        values = nullable_to_nan(X)
        mixture.fit(np.asarray(values) if named else values, sample_weight=sample_weight)
        self.mixture_ = mixture
        check_feature_names(self, X, reset=True)
        self.n_features_in_ = mixture.n_features_in_
        self.n_iter_ = mixture.n_iter_
        return self

    def transform(self, X) -> np.ndarray:
        """A copy of X with every NaN replaced by its conditional expectation.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        X_imputed : ndarray of shape (n_samples, n_features)
        """
        self._check_fitted()
        check_feature_names(self, X, reset=False)
        X = check_array(
            nullable_to_nan(X),
            n_features=self.n_features_in_,
            allow_nan=True,
            estimator_name=type(self).__name__,
        )
        return self.mixture_.impute(X)

    def save(self, path) -> None:
        """Save the fitted mixture to ``path`` (:meth:`GaussianMixture.save`).

        The file is :attr:`mixture_`'s model file: :func:`fastem.load` returns
        that :class:`~fastem.GaussianMixture`, whose
        :meth:`~fastem.GaussianMixture.impute` gives :meth:`transform`'s
        values bit for bit. This estimator's own parameters are not in the
        file; pickle the estimator to keep those.

        Parameters
        ----------
        path : str or os.PathLike
            The file to write, exactly as given.

        Raises
        ------
        NotFittedError
            If ``fit`` has not been called.
        """
        self._check_fitted()
        self.mixture_.save(path)

    def _check_fitted(self) -> None:
        if not hasattr(self, "mixture_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with "
                "appropriate arguments before using this estimator."
            )

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """Output feature names: the input's (imputation keeps every column).

        Parameters
        ----------
        input_features : array-like of str, default=None
            The input's names: ``feature_names_in_`` when None (``x0, x1, ...``
            if ``fit`` saw no names). Checked as scikit-learn checks them: one
            per feature, and equal to ``feature_names_in_`` where that exists.

        Returns
        -------
        feature_names_out : ndarray of str objects
        """
        self._check_fitted()
        names = getattr(self, "feature_names_in_", None)
        if input_features is None:
            if names is None:
                return np.array([f"x{i}" for i in range(self.n_features_in_)], dtype=object)
            return np.asarray(names, dtype=object)
        features = np.asarray(input_features, dtype=object)
        if names is not None and (
            features.shape != names.shape or not np.array_equal(features, names)
        ):
            raise ValueError("input_features is not equal to feature_names_in_")
        if features.ndim != 1 or features.shape[0] != self.n_features_in_:
            raise ValueError(
                f"input_features should have length equal to number of features "
                f"({self.n_features_in_}), got {features.size}"
            )
        return features
