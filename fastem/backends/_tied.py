"""Set-up and finish of the compiled tied-covariance pass, shared by the
numba and cython backends (NumPy, O(k d^2): never per row).

With one precision factor ``U`` shared by every component, the Mahalanobis
distance of row ``x`` to component ``k`` is ``||z - m_k||^2`` with
``z = (x - c) U`` (one triangular product per row, ``d^2 / 2``) and
``m_k = (mu_k - c) U`` (per component, once per pass): ``d^2 / 2 + k d`` per
row instead of ``k d^2 / 2``. The centre ``c`` is the mean of the means, so the
subtraction stays as well conditioned as ``x - mu_k`` for data far from 0; where
that mean lies more than :data:`FAR_CENTRE` squared standard deviations from the
means weighted by the mixture's weights (a start far from the data: an empty
component left at 0, the data's at 1e8), ``G`` about it would lose every digit of
the scatter, and the pass centres on the weighted mean of the means instead (see
:func:`centre_of`). Ordinary fits never come near that and keep their bits.

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

#: Weighted squared Mahalanobis spread of the means about their plain mean past
#: which the pass centres on their weighted mean (1e4 standard deviations: ``G``
#: would lose 8 of float64's ~16 digits, the far-shift threshold of
#: :data:`fastem._stats.FAR_SHIFT_RATIO`).
FAR_CENTRE = 1e8


def _far_centre(means64: np.ndarray, z: np.ndarray, comp_const) -> np.ndarray | None:
    """The means weighted by the mixture's weights where they lie more than
    :data:`FAR_CENTRE` squared standard deviations from the plain mean of the
    means (``z``: the means about it, times ``U``), else None.

    The weights are read from ``comp_const`` (``log w_k`` plus a constant shared
    by every component under a tied factor). Ordinary passes stop at the first
    test (``d max|z|^2`` bounds the spread: two small NumPy calls, ~1 us).
    """
    if comp_const is None or means64.shape[0] < 2:
        return None
    top = float(np.abs(z).max())
    if not top * top * z.shape[1] > FAR_CENTRE:  # ordinary fits (NaN too)
        return None
    cc = np.asarray(comp_const, dtype=np.float64)
    if not np.isfinite(cc).all():
        return None
    w = np.exp(cc - cc.max())
    w /= w.sum()
    with np.errstate(over="ignore", invalid="ignore"):
        spread = float(w @ np.einsum("kd,kd->k", z, z))
    if not spread > FAR_CENTRE:
        return None
    return w @ means64


def centre_of(means64: np.ndarray, prec_chol, comp_const=None) -> np.ndarray:
    """The centre of a tied pass (float64, (d,)): the mean of the means, or,
    where the means weighted by the mixture's weights lie more than
    :data:`FAR_CENTRE` squared standard deviations from it, their weighted mean
    (without ``comp_const``, or with equal weights, the plain mean)."""
    centre = means64.mean(axis=0)
    z = (means64 - centre) @ np.asarray(prec_chol, dtype=np.float64)
    far = _far_centre(means64, z, comp_const)
    return centre if far is None else far


def means_too_far_apart(means, prec_chol, comp_const) -> bool:
    """Whether no one centre serves the tied pass: the means weighted by the
    mixture's weights lie more than :data:`FAR_CENTRE` squared standard deviations
    from :func:`centre_of`'s centre, so ``G`` would lose more than 8 digits of the
    pooled scatter (a component 1e6 sd from the rest: the covariance 2e-6 off; at
    1e10 ill-defined; at 1e155+ ``G`` is inf). The caller then takes the
    full-covariance kernels with the factor broadcast, one shift per component, as
    the numpy reference does. Ordinary fits stop at the first test, as
    :func:`_far_centre`'s; a far start (an empty component far from the data) is
    not such a case: its weighted centre lies at the data."""
    means64 = np.asarray(means, dtype=np.float64)
    if means64.shape[0] < 2:
        return False
    U = np.asarray(prec_chol, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        # about the first mean (mean() costs ~4 us): 4 sum|z_k|^2 bounds the spread
        z = ((means64 - means64[0]) @ U).ravel()
        if not 4.0 * float(z @ z) > FAR_CENTRE:  # NaN: False
            return False
        cc = np.asarray(comp_const, dtype=np.float64)
        if not np.isfinite(cc).all():
            return False
        w = np.exp(cc - cc.max())
        w /= w.sum()
        centre = centre_of(means64, U, cc)
        z = (means64 - centre) @ U
        spread = float(w @ np.einsum("kd,kd->k", z, z))
    return not spread <= FAR_CENTRE  # inf (means ~1e155+ apart) included


def setup(means: np.ndarray, prec_chol: np.ndarray, dtype: np.dtype, comp_const=None):
    """``(centre, e, m)``: ``centre`` (d,) in ``dtype`` (:func:`centre_of`),
    ``e = means - centre`` (k, d) float64 and the projected means ``m = e @ U``
    (k, d) in ``dtype``."""
    means64 = np.asarray(means, dtype=dtype).astype(np.float64)
    U = np.asarray(prec_chol, dtype=np.float64)
    centre = np.ascontiguousarray(means64.mean(axis=0).astype(dtype))
    e = means64 - centre.astype(np.float64)
    z = e @ U
    far = _far_centre(means64, z, comp_const)
    if far is not None:  # a far start only (see the module's docs)
        centre = np.ascontiguousarray(far.astype(dtype))
        e = means64 - centre.astype(np.float64)
        z = e @ U
    return centre, e, np.ascontiguousarray(z.astype(dtype))


def finish(e: np.ndarray, nk: np.ndarray, t: np.ndarray, g: np.ndarray, sx, sxx) -> None:
    """Write the contract's ``sx`` (k, d) and pooled ``sxx`` (d, d) from the
    pass's ``nk``, ``t`` and ``G`` (``G`` holds only its upper triangle)."""
    sx[...] = t - nk[:, None] * e
    cross = t.T @ e
    pooled = g - cross - cross.T + (e.T * nk) @ e
    sxx[...] = np.triu(pooled) + np.triu(pooled, 1).T  # exactly symmetric, from g's triangle


# ------------------------------------------------------------------ missing values
#
# Rows with NaN under the shared precision ``L = U U^T``. For a pattern with
# missing coordinates ``m`` and observed ``o``, ``C = inv(L[m, m])`` and
# ``B = -C L[m, o]`` are the same for every component, so a pass factors
# ``L[m, m] = R R^T`` once per pattern (not k times). Per row, ``u`` is the row
# about ``c`` completed by its conditional mean *at the centre*:
# ``u[o] = x[o] - c[o]``, ``u[m] = B u[o] = -C L[m, :] u0`` (``u0``: zeros at ``m``),
# and ``z = u U`` is its one projection. Component ``k``'s deviation is then
#
#     y_k = u - e_k + E_m delta_k,   delta_k = e_k[m] - B e_k[o] = C h_k[m],
#
# with ``h_k = L e_k`` (once per pass) and ``E_m`` the embedding of the missing
# coordinates; ``delta_k`` depends on the pattern only (two solves per
# component and pattern). Since ``(u - e_k)`` minimizes nothing in particular,
# the Mahalanobis distance of ``x[o]`` under the marginal of ``o`` is
#
#     ||z - m_k||^2 - ||R^-1 h_k[m]||^2
#
# (``v^T L v = v_o^T S v_o + (v_m - B v_o)^T L[m, m] (v_m - B v_o)`` with ``S``
# the Schur complement and ``v = u - e_k``): the complete-data tied E-step plus
# a per-pattern correction. The statistics follow from ``y_k``:
#
# * ``sx_k = t_k + D_k - nk_k e_k`` with ``t_k = sum_i r_ik u_i`` (as complete)
#   and ``D_k = sum_patterns R_pk E_m delta_k`` (``R_pk``: the pattern's sum of
#   responsibilities), ``k |m|`` per pattern;
# * ``sum_k sum_i r_ik (y y^T + E_m C E_m^T)`` is :func:`finish`'s formula with
#   ``t + D`` for ``t`` and, for ``G``, ``sum_i w_i u u^T`` plus ``H + H^T``
#   with ``H = sum_i u_i s_i^T``, ``s_i = sum_k r_ik E_m delta_k`` (the symmetric
#   part of ``sum_i (w_i u_i + 2 s_i) u_i^T``: one ``d^2`` product per row) plus
#   ``sum_patterns E_m (sum_k R_pk delta_k delta_k^T + W_p C) E_m^T``.
#
# Per row that is ``d^2/2`` (projection) + ``d^2`` (scatter) + ``2 k d`` +
# ``|m| k``, against ``k d^2`` for the full-covariance missing pass; per
# pattern ``|m|^3/2 + k |m|^2``, against ``k (|m|^3/3 + |m|^2 |o|)``.


def missing_setup(means: np.ndarray, prec_chol: np.ndarray, comp_const=None):
    """``(centre, e, projected, h, U, L)``, all float64: ``centre`` (d,)
    (:func:`centre_of`), ``e = means - centre``, ``projected = e @ U``, ``h = e @ L``,
    the factor ``U`` and the precision ``L = U U^T``. The missing-data kernels
    work in float64 whatever the dtype of ``X`` (as the reference does)."""
    means64 = np.asarray(means).astype(np.float64)
    U = np.ascontiguousarray(prec_chol, dtype=np.float64)
    L = np.ascontiguousarray(U @ U.T)
    centre = np.ascontiguousarray(centre_of(means64, U, comp_const))
    e = np.ascontiguousarray(means64 - centre)
    return centre, e, np.ascontiguousarray(e @ U), np.ascontiguousarray(e @ L), U, L


def missing_finish(e, nk, t, g, sx, sxx) -> None:
    """The contract's ``sx`` and pooled ``sxx`` from a missing-data tied pass:
    ``t`` (k, d) holds ``t + D`` and ``g`` (d, d) a matrix whose symmetric part
    is ``G + H + H^T`` plus the per-pattern ``(m, m)`` terms (the kernels
    accumulate ``sum_i (w_i u_i + 2 s_i) u_i^T`` with ``s_i = sum_k r_ik E_m
    delta_k``, one product for both)."""
    finish(e, nk, t, 0.5 * (g + g.T), sx, sxx)
