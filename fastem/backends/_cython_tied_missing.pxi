# Tied-covariance E-step and statistics for rows with missing values
# (included at the end of _cython.pyx: uses its fused types and block helpers).
#
# One precision L = U U^T shared by every component, so a pattern's C =
# inv(L[m, m]) and regression are the same for all of them: one Cholesky
# factor R of L[m, m] per pattern segment, not K. Each row is completed by its
# conditional mean at the centre c of the means (u[o] = x[o] - c[o], u[m] by
# two triangular solves with R) and projected once (z = u U); component k's
# Mahalanobis distance is ||z - m_k||^2 minus a per-pattern correction, and the
# statistics are one pooled scatter of u plus per-pattern terms in the (m, m)
# block and d |m| per row. fastem.backends._tied documents the algebra and
# finishes the statistics. Everything is float64 (X is widened on load), like
# the reference; chunks and their reduction order depend only on the shape.


cdef int _tm_conditionals(Py_ssize_t d, Py_ssize_t K, const double* L, const double* h_t,
                          const Py_ssize_t* mi, Py_ssize_t nm, const Py_ssize_t* oi,
                          double* R, double* ri, double* rinv, double* lmo, double* delta,
                          double* corr, double* cmat, double* shift) noexcept nogil:
    """A pattern's conditionals under L (row-major d x d; R, rinv, lmo, cmat use
    leading dimension d): R lower Cholesky of L[m, m], ri its inverse pivots,
    lmo = L[m, o], cmat = C, delta[i, k] = (C h_k[m])_i (nm x K) and corr[k] =
    h_k[m] . delta_k, from h_t = h (d x K, component last: the K-loops are
    vector loops), shift = nm/2 log 2pi - 1/2 log det L[m, m]. Returns 1 if
    L[m, m] is not positive definite."""
    cdef Py_ssize_t no = d - nm, i, j, tt, k
    cdef double s, cij, half_logdet = 0.0
    cdef const double* lrow
    cdef const double* hj
    cdef double* di
    for k in range(K):
        corr[k] = 0.0
    shift[0] = 0.0
    if nm == 0:
        return 0
    for i in range(nm):
        lrow = L + mi[i] * d
        for j in range(i + 1):
            s = lrow[mi[j]]
            for tt in range(j):
                s = s - R[i * d + tt] * R[j * d + tt]
            if i == j:
                if not s > 0.0:  # also catches NaN
                    return 1
                s = sqrt(s)
                R[i * d + i] = s
                ri[i] = 1.0 / s
                half_logdet += log(s)
            else:
                R[i * d + j] = s * ri[j]
        for tt in range(no):
            lmo[i * d + tt] = lrow[oi[tt]]
    for j in range(nm):  # inverse of R, column by column
        rinv[j * d + j] = ri[j]
        for i in range(j + 1, nm):
            s = 0.0
            for tt in range(j, i):
                s = s - R[i * d + tt] * rinv[tt * d + j]
            rinv[i * d + j] = s * ri[i]
    for i in range(nm):  # C = R^-T R^-1
        for j in range(i, nm):
            s = 0.0
            for tt in range(j, nm):
                s = s + rinv[tt * d + i] * rinv[tt * d + j]
            cmat[i * d + j] = s
            cmat[j * d + i] = s
    for i in range(nm):  # delta = C h[m], all components at once
        di = delta + i * K
        for k in range(K):
            di[k] = 0.0
        for j in range(nm):
            cij = cmat[i * d + j]
            hj = h_t + mi[j] * K
            for k in range(K):
                di[k] = di[k] + cij * hj[k]
    for i in range(nm):
        di = delta + i * K
        hj = h_t + mi[i] * K
        for k in range(K):
            corr[k] = corr[k] + hj[k] * di[k]
    shift[0] = 0.5 * nm * _LOG_2PI - half_logdet
    return 0


cdef void _tm_accum_sym(const double* xt, const double* r, const double* sfull, Py_ssize_t d,
                        double* qd, double* g) noexcept nogil:
    """g += sum_r (r_r u_r + 2 s_r) u_r^T, all of it (not a triangle): its symmetric
    part is sum_r r_r u u^T + H + H^T with H = sum_r u s^T (s is nonzero on
    missing coordinates only, different in every pattern), one d^2 per row."""
    cdef Py_ssize_t a, b, rr
    cdef const double* xa
    cdef const double* sa
    for a in range(d):
        xa = xt + a * BLOCK
        sa = sfull + a * BLOCK
        for rr in range(BLOCK):
            qd[rr] = r[rr] * xa[rr] + 2.0 * sa[rr]
        b = 0
        while b + 4 <= d:
            fastem_dot4_double(qd, xt + b * BLOCK, BLOCK, BLOCK, g + a * d + b)
            b += 4
        while b < d:
            g[a * d + b] += fastem_dot_double(qd, xt + b * BLOCK, BLOCK)
            b += 1


cdef double _tm_flush(Py_ssize_t d, Py_ssize_t K, Py_ssize_t nb, Py_ssize_t ne,
                      const Py_ssize_t* e_lo, const Py_ssize_t* e_nm, const Py_ssize_t* e_mi,
                      const Py_ssize_t* e_off, const double* e_shift, const double* e_corr,
                      const double* pool, const double* U, const double* proj,
                      const double* cc, double* xt, double* z, double* lp, double* maha,
                      double* mx, double* inv, double* rsum, double* wb, double* pw,
                      double* sfull, double* sv, const long long* rid, bint fit, double* nk,
                      double* t, double* g, double* out) noexcept nogil:
    """E-step (and, with fit, statistics) of the block's nb rows u (xt, d x BLOCK)
    made of entries q (slots e_lo[q]:e_lo[q + 1], one pattern each, whose delta
    (nm x K) and C (nm x nm) start at pool + e_off[q]); returns its loglik."""
    cdef Py_ssize_t k, r, a, q, i, i2, nm, r0, r1
    cdef double cq, mk, vv, s, tot, si
    cdef double* lpk
    cdef double* za
    cdef const double* dq
    cdef const double* cqm
    cdef const Py_ssize_t* mi
    cdef double ll
    for a in range(d):  # padding slots: finite, weight 0
        for r in range(nb, BLOCK):
            xt[a * BLOCK + r] = 0.0
    for r in range(nb, BLOCK):
        wb[r] = 0.0
    _project_tri(xt, d, U, z)
    for k in range(K):
        lpk = lp + k * BLOCK
        for q in range(ne):
            cq = cc[k] + e_shift[q] + 0.5 * e_corr[q * K + k]
            for r in range(e_lo[q], e_lo[q + 1]):
                lpk[r] = cq
        for r in range(nb, BLOCK):
            lpk[r] = 0.0
        for r in range(BLOCK):
            maha[r] = 0.0
        for a in range(d):
            mk = proj[k * d + a]
            za = z + a * BLOCK
            for r in range(BLOCK):
                vv = za[r] - mk
                maha[r] = maha[r] + vv * vv
        for r in range(BLOCK):
            lpk[r] = lpk[r] - 0.5 * maha[r]
    if not fit:
        for r in range(nb):
            for k in range(K):
                out[rid[r] * K + k] = lp[k * BLOCK + r]
        return 0.0
    ll = _responsibilities(lp, K, nb, wb, mx, inv)
    for r in range(BLOCK):
        rsum[r] = 0.0
    for k in range(K):
        lpk = lp + k * BLOCK
        s = fastem_sum(lpk, BLOCK)
        nk[k] += s
        for r in range(BLOCK):
            rsum[r] = rsum[r] + lpk[r]
        if s == 0.0:
            continue
        for a in range(d):
            t[k * d + a] += fastem_dot_double(lpk, xt + a * BLOCK, BLOCK)
    memset(sfull, 0, d * BLOCK * sizeof(double))
    for q in range(ne):
        nm = e_nm[q]
        if nm == 0:
            continue
        r0 = e_lo[q]
        r1 = e_lo[q + 1]
        mi = e_mi + q * d
        dq = pool + e_off[q]
        cqm = dq + nm * K
        tot = 0.0
        for k in range(K):
            s = 0.0
            lpk = lp + k * BLOCK
            for r in range(r0, r1):
                s = s + lpk[r]
            sv[k] = s
            tot = tot + s
        if tot == 0.0:
            continue
        for i in range(nm):  # D: the responsibility-weighted delta
            for k in range(K):
                t[k * d + mi[i]] += sv[k] * dq[i * K + k]
        for i in range(nm):  # (m, m): sum_k R_k delta delta^T + W C, both triangles
            for i2 in range(i, nm):
                s = 0.0
                for k in range(K):
                    s = s + sv[k] * dq[i * K + k] * dq[i2 * K + k]
                s = s + tot * cqm[i * nm + i2]
                g[mi[i] * d + mi[i2]] += s
                if i2 != i:
                    g[mi[i2] * d + mi[i]] += s
        for r in range(r0, r1):  # s = sum_k r_k delta_k on the missing coordinates
            for i in range(nm):
                si = 0.0
                for k in range(K):
                    si = si + lp[k * BLOCK + r] * dq[i * K + k]
                sfull[mi[i] * BLOCK + r] = si
    _tm_accum_sym(xt, rsum, sfull, d, pw, g)
    return ll


cdef double _tm_chunk(const floating* X, const double* w, const long long* rows,
                      const long long* ptr, Py_ssize_t n_pat, Py_ssize_t j0, Py_ssize_t j1,
                      Py_ssize_t d, Py_ssize_t K, const double* centre, const double* proj,
                      const double* h_t, const double* U, const double* L, const double* cc,
                      bint fit, double* nk, double* t, double* g, double* out,
                      int* err) noexcept nogil:
    """Positions j0:j1 of rows: their pattern segments' conditionals once each,
    their rows pooled into blocks of BLOCK (a segment cut by a block boundary
    continues as a new entry); with fit the chunk's partials (zeroed here)."""
    cdef Py_ssize_t cap = K * d + d * d + BLOCK * (4 * K + 16)
    cdef Py_ssize_t n_dbl = (4 * d * d + K * d + K + 2 * d + BLOCK + BLOCK * K + cap
                             + (4 * d + K + 5) * BLOCK + K)
    cdef double* buf = <double*>malloc(n_dbl * sizeof(double))
    cdef Py_ssize_t* ibuf = <Py_ssize_t*>malloc((2 * d + 3 * (BLOCK + 1) + BLOCK * d)
                                                * sizeof(Py_ssize_t))
    cdef long long* rid = <long long*>malloc(BLOCK * sizeof(long long))
    cdef double* R
    cdef double* ri
    cdef double* rinv
    cdef double* lmo
    cdef double* cmat
    cdef double* delta
    cdef double* corr
    cdef double* v
    cdef double* sfull
    cdef double* e_shift
    cdef double* e_corr
    cdef double* pool
    cdef double* xt
    cdef double* z
    cdef double* lp
    cdef double* maha
    cdef double* mx
    cdef double* inv
    cdef double* rsum
    cdef double* wb
    cdef double* pw
    cdef double* sv
    cdef Py_ssize_t* mi
    cdef Py_ssize_t* oi
    cdef Py_ssize_t* e_lo
    cdef Py_ssize_t* e_nm
    cdef Py_ssize_t* e_off
    cdef Py_ssize_t* e_mi
    cdef Py_ssize_t p, j, pf, pf_end, hi, nm, no, size, nb = 0, ne = 0, used = 0
    cdef Py_ssize_t take, col, r, a, tt, i, k, row
    cdef double ll = 0.0, shift, s
    cdef const floating* xr
    cdef double* ppos
    if buf == NULL or ibuf == NULL or rid == NULL:
        err[0] = 1
        free(buf)
        free(ibuf)
        free(rid)
        return 0.0
    R = buf
    rinv = R + d * d
    lmo = rinv + d * d
    cmat = lmo + d * d
    delta = cmat + d * d
    corr = delta + K * d
    ri = corr + K
    v = ri + d
    e_shift = v + d
    e_corr = e_shift + BLOCK
    pool = e_corr + BLOCK * K
    xt = pool + cap
    z = xt + d * BLOCK
    pw = z + d * BLOCK
    lp = pw + d * BLOCK
    maha = lp + K * BLOCK
    mx = maha + BLOCK
    inv = mx + BLOCK
    rsum = inv + BLOCK
    wb = rsum + BLOCK
    sv = wb + BLOCK
    sfull = sv + K
    mi = ibuf
    oi = mi + d
    e_lo = oi + d
    e_nm = e_lo + (BLOCK + 1)
    e_off = e_nm + (BLOCK + 1)
    e_mi = e_off + (BLOCK + 1)
    if fit:
        memset(nk, 0, K * sizeof(double))
        memset(t, 0, K * d * sizeof(double))
        memset(g, 0, d * d * sizeof(double))
    e_lo[0] = 0
    p = _segment_of(ptr, n_pat, j0)
    j = j0
    pf = j0
    while j < j1:
        while ptr[p + 1] <= j:  # skip empty segments
            p += 1
        hi = ptr[p + 1] if ptr[p + 1] < j1 else j1
        nm = _pattern_of(X + rows[ptr[p]] * d, d, mi, oi)
        no = d - nm
        if _tm_conditionals(d, K, L, h_t, mi, nm, oi, R, ri, rinv, lmo, delta, corr, cmat,
                            &shift):
            err[0] = 2
            break
        size = K * nm + nm * nm
        while j < hi:
            if nb == BLOCK or used + size > cap:
                ll += _tm_flush(d, K, nb, ne, e_lo, e_nm, e_mi, e_off, e_shift, e_corr, pool,
                                U, proj, cc, xt, z, lp, maha, mx, inv, rsum, wb, pw, sfull, sv,
                                rid, fit, nk, t, g, out)
                nb = 0
                ne = 0
                used = 0
            e_nm[ne] = nm
            e_off[ne] = used
            e_shift[ne] = shift
            for i in range(nm):
                e_mi[ne * d + i] = mi[i]
            ppos = pool + used
            for k in range(K):
                e_corr[ne * K + k] = corr[k]
            memcpy(ppos, delta, nm * K * sizeof(double))
            ppos = ppos + nm * K
            for i in range(nm):
                for a in range(nm):
                    ppos[i * nm + a] = cmat[i * d + a]
            used += size
            take = BLOCK - nb if BLOCK - nb < hi - j else hi - j
            pf_end = j + 2 * BLOCK if j + 2 * BLOCK < j1 else j1
            while pf < pf_end:  # rows are scattered over X: fetch ahead
                fastem_prefetch(X + rows[pf] * d)
                pf += 1
            for r in range(take):
                row = rows[j + r]
                xr = X + row * d
                col = nb + r
                rid[col] = row
                if fit:
                    wb[col] = w[row]
                for tt in range(no):
                    a = oi[tt]
                    xt[a * BLOCK + col] = <double>xr[a] - centre[a]
                if nm == 0:
                    continue
                for i in range(nm):  # R v = -L[m, o] u[o]
                    s = 0.0
                    for tt in range(no):
                        s = s - lmo[i * d + tt] * xt[oi[tt] * BLOCK + col]
                    for a in range(i):
                        s = s - R[i * d + a] * v[a]
                    v[i] = s * ri[i]
                i = nm - 1
                while i >= 0:  # R^T u[m] = v
                    s = v[i]
                    for a in range(i + 1, nm):
                        s = s - R[a * d + i] * v[a]
                    v[i] = s * ri[i]
                    xt[mi[i] * BLOCK + col] = v[i]
                    i -= 1
            nb += take
            j += take
            ne += 1
            e_lo[ne] = nb
    if err[0] == 0 and nb > 0:
        ll += _tm_flush(d, K, nb, ne, e_lo, e_nm, e_mi, e_off, e_shift, e_corr, pool, U, proj,
                        cc, xt, z, lp, maha, mx, inv, rsum, wb, pw, sfull, sv, rid, fit, nk, t, g,
                        out)
    free(buf)
    free(ibuf)
    free(rid)
    return ll


cdef double _em_missing_tied(const floating[:, ::1] X, const double[::1] sw,
                             const long long[::1] rows, const long long[::1] ptr,
                             const double[::1] centre, const double[:, ::1] proj,
                             const double[:, ::1] h_t, const double[:, ::1] U,
                             const double[:, ::1] L, const double[::1] cc, double[::1] nk,
                             double[:, ::1] t, double[:, ::1] g) except? -1.0:
    cdef Py_ssize_t d = X.shape[1], K = proj.shape[0], n_pat = ptr.shape[0] - 1
    cdef Py_ssize_t base = ptr[0], m = ptr[n_pat] - ptr[0]
    cdef Py_ssize_t nc = _n_chunks(m, K * (d + 1) + d * d), c, k, a, b
    cdef int err = 0
    cdef double ll = 0.0, s
    cdef double[::1] ll_p = np.empty(nc)
    cdef double[:, ::1] nk_p = np.empty((nc, K))
    cdef double[:, :, ::1] t_p = np.empty((nc, K, d))
    cdef double[:, ::1] g_p = np.empty((nc, d * d))  # chunks zero their own
    cdef const floating* xp = &X[0, 0]
    cdef const double* wp = &sw[0]
    cdef const long long* rp = &rows[0]
    cdef const long long* pp = &ptr[0]
    with nogil:
        for c in prange(nc, schedule="dynamic", chunksize=1, num_threads=_team(nc)):
            ll_p[c] = _tm_chunk(xp, wp, rp, pp, n_pat, base + c * m // nc,
                                base + (c + 1) * m // nc, d, K, &centre[0], &proj[0, 0],
                                &h_t[0, 0], &U[0, 0], &L[0, 0], &cc[0], True, &nk_p[c, 0],
                                &t_p[c, 0, 0], &g_p[c, 0], NULL, &err)
        if err == 0:
            # fixed chunk order in every sum -> independent of the thread count
            for c in range(nc):
                ll = ll + ll_p[c]
            for k in range(K):
                s = 0.0
                for c in range(nc):
                    s = s + nk_p[c, k]
                nk[k] = s
                for a in range(d):
                    s = 0.0
                    for c in range(nc):
                        s = s + t_p[c, k, a]
                    t[k, a] = s
            for a in range(d):
                for b in range(d):
                    s = 0.0
                    for c in range(nc):
                        s = s + g_p[c, a * d + b]
                    g[a, b] = s
    _raise_missing(err)
    return ll


cdef void _log_prob_missing_tied(const floating[:, ::1] X, const long long[::1] rows,
                                 const long long[::1] ptr, const double[::1] centre,
                                 const double[:, ::1] proj, const double[:, ::1] h_t,
                                 const double[:, ::1] U, const double[:, ::1] L,
                                 const double[::1] cc, double[:, ::1] out) except *:
    cdef Py_ssize_t d = X.shape[1], K = proj.shape[0], n_pat = ptr.shape[0] - 1
    cdef Py_ssize_t base = ptr[0], m = ptr[n_pat] - ptr[0]
    cdef Py_ssize_t nc = _n_chunks(m, 0), c
    cdef int err = 0
    cdef const floating* xp = &X[0, 0]
    cdef const long long* rp = &rows[0]
    cdef const long long* pp = &ptr[0]
    with nogil:
        for c in prange(nc, schedule="dynamic", chunksize=1, num_threads=_team(nc)):
            _tm_chunk(xp, NULL, rp, pp, n_pat, base + c * m // nc, base + (c + 1) * m // nc,
                      d, K, &centre[0], &proj[0, 0], &h_t[0, 0], &U[0, 0], &L[0, 0], &cc[0],
                      False, NULL, NULL, NULL, &out[0, 0], &err)
    _raise_missing(err)


def _em_missing_tied_impl(const floating[:, ::1] X, const double[::1] sample_weight,
                          const long long[::1] rows, const long long[::1] ptr,
                          const double[::1] centre, const double[:, ::1] proj,
                          const double[:, ::1] h_t, const double[:, ::1] U,
                          const double[:, ::1] L, const double[::1] comp_const,
                          double[::1] nk, double[:, ::1] t, double[:, ::1] g):
    return _em_missing_tied(X, sample_weight, rows, ptr, centre, proj, h_t, U, L, comp_const,
                            nk, t, g)


def _log_prob_missing_tied_impl(const floating[:, ::1] X, const long long[::1] rows,
                                const long long[::1] ptr, const double[::1] centre,
                                const double[:, ::1] proj, const double[:, ::1] h_t,
                                const double[:, ::1] U, const double[:, ::1] L,
                                const double[::1] comp_const, double[:, ::1] out):
    _log_prob_missing_tied(X, rows, ptr, centre, proj, h_t, U, L, comp_const, out)


def em_pass_missing_tied(X, sample_weight, rows, pattern_ptr, means, prec_chol, comp_const,
                         nk, sx, sxx):
    """EM pass over the listed rows with NaN under one shared factor ``prec_chol``
    (d, d); ``sxx`` (d, d) receives the pooled second moments (kernel contract)."""
    rows, ptr, m, means, prec_chol, _ = _missing_args(X, rows, pattern_ptr, means, prec_chol)
    n, d = X.shape
    k = means.shape[0]
    _check(X, k, [("sample_weight", sample_weight, (n,)), ("means", means, (k, d)),
                  ("prec_chol", prec_chol, (d, d)), ("comp_const", comp_const, (k,)),
                  ("nk", nk, (k,)), ("sx", sx, (k, d)), ("sxx", sxx, (d, d))])
    if m == 0:
        nk[...] = 0.0
        sx[...] = 0.0
        sxx[...] = 0.0
        return 0.0
    centre, e, proj, h, U, L = _tied.missing_setup(means, prec_chol)
    t = np.empty((k, d))
    g = np.empty((d, d))
    ll = _em_missing_tied_impl(X, sample_weight, rows, ptr, centre, proj,
                               np.ascontiguousarray(h.T), U, L, comp_const, nk, t, g)
    _tied.missing_finish(e, nk, t, g, sx, sxx)
    return ll


def log_prob_missing_tied(X, rows, pattern_ptr, means, prec_chol, comp_const, out):
    """Marginal log-densities ``out[rows[j], k]`` under one shared factor."""
    rows, ptr, m, means, prec_chol, _ = _missing_args(X, rows, pattern_ptr, means, prec_chol)
    n, d = X.shape
    k = means.shape[0]
    _check(X, k, [("means", means, (k, d)), ("prec_chol", prec_chol, (d, d)),
                  ("comp_const", comp_const, (k,)), ("out", out, (n, k))])
    if m:
        centre, _, proj, h, U, L = _tied.missing_setup(means, prec_chol)
        _log_prob_missing_tied_impl(X, rows, ptr, centre, proj, np.ascontiguousarray(h.T), U, L,
                                    comp_const, out)
