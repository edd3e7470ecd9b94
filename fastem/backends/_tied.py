"""Set-up and finish of the compiled tied-covariance pass, shared by the
numba and cython backends (NumPy, O(k d^2): never per row).

With one precision factor ``U`` shared by every component, the Mahalanobis
distance of row ``x`` to component ``k`` is ``||z - m_k||^2`` with
``z = (x - c) U`` (one triangular product per row, ``d^2 / 2``) and
``m_k = (mu_k - c) U`` (per component, once per pass): ``d^2 / 2 + k d`` per
row instead of ``k d^2 / 2``. The centre ``c`` is the mean of the means, so the
subtraction stays as well conditioned as ``x - mu_k`` for data far from 0.

The statistics need one pooled scatter instead of ``k``: the compiled pass
accumulates ``nk``, ``t_k = sum_i r_ik (x_i - c)`` (``k d`` per row) and
``G = sum_i w_i (x_i - c)(x_i - c)^T`` (``d^2 / 2`` per row, whatever ``k``),
and :func:`finish` turns them into the contract's ``sx`` and pooled ``sxx``:
with ``e_k = mu_k - c``,

* ``sx_k = t_k - nk_k e_k``;
* ``sum_k sum_i r_ik (x_i - mu_k)(x_i - mu_k)^T``
  ``= G - sum_k (t_k e_k^T + e_k t_k^T - nk_k e_k e_k^T)``.

``G`` is a scatter about ``c``, so the last subtraction loses digits in
proportion to (total scatter) / (within-component scatter): about 1e-12
relative even for components 100 standard deviations apart.
"""

from __future__ import annotations

import numpy as np


def setup(means: np.ndarray, prec_chol: np.ndarray, dtype: np.dtype):
    """``(centre, e, m)``: ``centre`` (d,) in ``dtype``, ``e = means - centre``
    (k, d) float64 and the projected means ``m = e @ U`` (k, d) in ``dtype``."""
    means64 = np.asarray(means, dtype=dtype).astype(np.float64)
    centre = np.ascontiguousarray(means64.mean(axis=0).astype(dtype))
    e = means64 - centre.astype(np.float64)
    projected = np.ascontiguousarray((e @ np.asarray(prec_chol, dtype=np.float64)).astype(dtype))
    return centre, e, projected


def finish(e: np.ndarray, nk: np.ndarray, t: np.ndarray, g: np.ndarray, sx, sxx) -> None:
    """Write the contract's ``sx`` (k, d) and pooled ``sxx`` (d, d) from the
    pass's ``nk``, ``t`` and ``G`` (``G`` holds only its upper triangle)."""
    sx[...] = t - nk[:, None] * e
    cross = t.T @ e
    pooled = g - cross - cross.T + (e.T * nk) @ e
    sxx[...] = np.triu(pooled) + np.triu(pooled, 1).T  # exactly symmetric, from g's triangle
