# Tied-covariance E-step and statistics for rows with missing values
# (included at the end of _cython.pyx: uses its fused types and block helpers).
#
# One precision L = U U^T shared by every component, so a pattern's C =
# inv(L[m, m]) and regression are the same for all of them: one Cholesky
# factor of L[m, m] per pattern segment, not K. Each row is completed by its
# conditional mean at the centre c of the means (u[o] = x[o] - c[o],
# u[m] = -C L[m, :] u0 with u0 the row with zeros at m) and projected once
# (z = u U); component k's Mahalanobis distance is ||z - m_k||^2 minus a
# per-pattern correction, and the statistics are one pooled scatter of u plus
# per-pattern terms in the (m, m) block and d |m| per row.
# fastem.backends._tied documents the algebra and finishes the statistics.
# Everything is float64 (X is widened on load), like the reference; chunks and
# their reduction order depend only on the shape.
#
# With 20% of W5's entries missing nearly every row has a pattern of its own,
# so the per-pattern work runs once per row in loops a few coordinates long.
# Hence a block's patterns are factorized together when the block is full,
# TM_LANES at a time with the pattern as the innermost (vector) axis, in order
# of their number of missing coordinates (so a group pads little); rows wait
# in the block as u0 with L[m, :] u0 and are completed once C is known; the
# W C term of the (m, m) block uses the rows' weights (the sum of a row's
# responsibilities); the pool keeps only delta; the block's responsibilities
# are transposed once so the per-entry loops over components are unit-stride.


cdef enum:
    TM_LANES = 8  # patterns factorized together (the innermost, vector axis)


cdef int _tm_factor_lanes(Py_ssize_t d, const double* L, const Py_ssize_t* lm,
                          const Py_ssize_t* lnm, double* A, double* Rv, double* Ri, double* s8,
                          double* det8) noexcept nogil:
    """C = inv(L[m, m]) of TM_LANES patterns at once (lane q: missing coordinates
    lm[q * d:q * d + lnm[q]]), each padded with the identity to the largest nm:
    C to A[(i * d + j) * TM_LANES + q] (i, j < n), the product of the Cholesky
    pivots to det8[q]; Rv and Ri (same layout) receive the Cholesky factor and
    its inverse. Returns 1 if some L[m, m] is not positive definite, else 0."""
    cdef Py_ssize_t n = 0, q, i, j, t, ij
    cdef double r
    cdef int bad = 0
    for q in range(TM_LANES):
        if lnm[q] > n:
            n = lnm[q]
    for i in range(n):
        for j in range(i + 1):
            ij = (i * d + j) * TM_LANES
            for q in range(TM_LANES):
                if i < lnm[q]:
                    A[ij + q] = L[lm[q * d + i] * d + lm[q * d + j]]
                else:
                    A[ij + q] = 1.0 if i == j else 0.0
    for q in range(TM_LANES):
        det8[q] = 1.0
    for i in range(n):
        for j in range(i + 1):
            ij = (i * d + j) * TM_LANES
            for q in range(TM_LANES):
                s8[q] = A[ij + q]
            for t in range(j):
                for q in range(TM_LANES):
                    s8[q] = s8[q] - Rv[(i * d + t) * TM_LANES + q] * Rv[(j * d + t) * TM_LANES + q]
            if i == j:
                for q in range(TM_LANES):
                    if not s8[q] > 0.0:  # also catches NaN
                        bad = 1
                        s8[q] = 1.0
                    r = sqrt(s8[q])
                    Rv[ij + q] = r
                    Ri[ij + q] = 1.0 / r
                    det8[q] = det8[q] * r
            else:
                for q in range(TM_LANES):
                    Rv[ij + q] = s8[q] * Ri[(j * d + j) * TM_LANES + q]
    if bad:
        return 1
    for i in range(n):  # rows of R^-1; the entries of one row are independent
        for j in range(i):
            for q in range(TM_LANES):
                s8[q] = 0.0
            for t in range(j, i):
                for q in range(TM_LANES):
                    s8[q] = s8[q] - Rv[(i * d + t) * TM_LANES + q] * Ri[(t * d + j) * TM_LANES + q]
            for q in range(TM_LANES):
                Ri[(i * d + j) * TM_LANES + q] = s8[q] * Ri[(i * d + i) * TM_LANES + q]
    for i in range(n):  # C = R^-T R^-1
        for j in range(i, n):
            for q in range(TM_LANES):
                s8[q] = 0.0
            for t in range(j, n):
                for q in range(TM_LANES):
                    s8[q] = s8[q] + Ri[(t * d + i) * TM_LANES + q] * Ri[(t * d + j) * TM_LANES + q]
            for q in range(TM_LANES):
                A[(i * d + j) * TM_LANES + q] = s8[q]
                A[(j * d + i) * TM_LANES + q] = s8[q]
    return 0


cdef int _tm_conditionals(Py_ssize_t d, Py_ssize_t K, const double* L, const double* h_t,
                          const double* cc, Py_ssize_t ne, const Py_ssize_t* e_lo,
                          const Py_ssize_t* e_nm, const Py_ssize_t* e_mi,
                          const Py_ssize_t* e_off, const double* wb, const double* av,
                          double* xt, double* lp, double* pool, double* g, Py_ssize_t* order,
                          Py_ssize_t* cnt, Py_ssize_t* lm, Py_ssize_t* lnm, double* A,
                          double* Rv, double* Ri, double* s8, double* det8, double* cconst,
                          bint fit) noexcept nogil:
    """The conditionals of a block's entries, TM_LANES patterns at a time in
    order of their number of missing coordinates: delta (nm x K) of entry q to
    pool + e_off[q] (delta[i, k] = (C h_k[m])_i), its rows' log-density constants
    cc[k] + nm/2 log 2pi - 1/2 log det L[m, m] + 1/2 h_k[m] . delta_k into lp, their
    missing coordinates u[m] = -C av into xt, and with fit (sum of the rows'
    weights) C into the (m, m) block of g (upper triangle, off-diagonal entries
    twice: only the symmetric part of g counts). Returns 1 if some L[m, m] is
    not positive definite."""
    cdef Py_ssize_t v, q, g0, ent, nm, i, j, k, r, r0, r1, mi
    cdef double det, half_logdet, shift, cij, s, wsum
    cdef double* di
    cdef const double* hj
    for v in range(d + 2):  # counting sort of the entries by nm (0..d)
        cnt[v] = 0
    for q in range(ne):
        cnt[e_nm[q] + 1] += 1
    for v in range(d + 1):
        cnt[v + 1] += cnt[v]
    for q in range(ne):
        v = e_nm[q]
        order[cnt[v]] = q
        cnt[v] += 1
    g0 = 0
    while g0 < ne:
        for q in range(TM_LANES):
            lnm[q] = 0
            if g0 + q < ne:
                ent = order[g0 + q]
                nm = e_nm[ent]
                lnm[q] = nm
                for i in range(nm):
                    lm[q * d + i] = e_mi[ent * d + i]
        if _tm_factor_lanes(d, L, lm, lnm, A, Rv, Ri, s8, det8):
            return 1
        for q in range(TM_LANES if ne - g0 > TM_LANES else ne - g0):
            ent = order[g0 + q]
            nm = lnm[q]
            det = det8[q]
            if 1e-300 < det < 1e300:  # one log; the pivots' logs only on over/underflow
                half_logdet = log(det)
            else:
                half_logdet = 0.0
                for i in range(nm):
                    half_logdet = half_logdet + log(Rv[(i * d + i) * TM_LANES + q])
            shift = 0.5 * nm * _LOG_2PI - half_logdet
            for k in range(K):
                cconst[k] = cc[k] + shift
            for i in range(nm):  # delta = C h[m], all components at once
                di = pool + e_off[ent] + i * K
                for k in range(K):
                    di[k] = 0.0
                for j in range(nm):
                    cij = A[(i * d + j) * TM_LANES + q]
                    hj = h_t + lm[q * d + j] * K
                    for k in range(K):
                        di[k] = di[k] + cij * hj[k]
                hj = h_t + lm[q * d + i] * K
                for k in range(K):
                    cconst[k] = cconst[k] + 0.5 * hj[k] * di[k]
            r0 = e_lo[ent]
            r1 = e_lo[ent + 1]
            wsum = 0.0
            for r in range(r0, r1):
                for k in range(K):
                    lp[k * BLOCK + r] = cconst[k]
                for i in range(nm):
                    s = 0.0
                    for j in range(nm):
                        s = s - A[(i * d + j) * TM_LANES + q] * av[r * d + j]
                    xt[lm[q * d + i] * BLOCK + r] = s
                if fit:
                    wsum = wsum + wb[r]
            if fit and wsum != 0.0:
                for i in range(nm):
                    mi = lm[q * d + i]
                    g[mi * d + mi] += wsum * A[(i * d + i) * TM_LANES + q]
                    for j in range(i + 1, nm):
                        g[mi * d + lm[q * d + j]] += 2.0 * wsum * A[(i * d + j) * TM_LANES + q]
        g0 += TM_LANES
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
                      const Py_ssize_t* e_off, double* pool, const double* L,
                      const double* h_t, const double* U, const double* proj,
                      const double* cc, double* xt, const double* av, double* z, double* lp,
                      double* rt, double* maha, double* mx, double* inv, double* rsum,
                      double* wb, double* pw, double* sfull, double* sv, double* qv,
                      Py_ssize_t* order, Py_ssize_t* cnt, Py_ssize_t* lm, Py_ssize_t* lnm,
                      double* A, double* Rv, double* Ri, double* s8, double* det8,
                      double* cconst, const long long* rid, bint fit, double* nk, double* t,
                      double* tt, double* g, double* out, int* err) noexcept nogil:
    """E-step (and, with fit, statistics) of the block's nb rows u0 (xt, d x BLOCK)
    made of entries q (slots e_lo[q]:e_lo[q + 1], one pattern each, whose delta
    (nm x K) goes to pool + e_off[q]): first the entries' conditionals
    (_tm_conditionals), then D into tt (d x K) and the rest into nk, t and g;
    returns its loglik."""
    cdef Py_ssize_t k, r, a, q, i, i2, nm, r0, r1, mi
    cdef double mk, vv, s, dv
    cdef double* lpk
    cdef double* za
    cdef const double* dq
    cdef double ll
    for a in range(d):  # padding slots: finite, weight 0
        for r in range(nb, BLOCK):
            xt[a * BLOCK + r] = 0.0
    for r in range(nb, BLOCK):
        wb[r] = 0.0
    if _tm_conditionals(d, K, L, h_t, cc, ne, e_lo, e_nm, e_mi, e_off, wb, av, xt, lp, pool,
                        g, order, cnt, lm, lnm, A, Rv, Ri, s8, det8, cconst, fit):
        err[0] = 2
        return 0.0
    _project_tri(xt, d, U, z)
    for k in range(K):
        lpk = lp + k * BLOCK
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
            rt[r * K + k] = lpk[r]
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
        dq = pool + e_off[q]
        for k in range(K):
            sv[k] = rt[r0 * K + k]
        for r in range(r0 + 1, r1):
            for k in range(K):
                sv[k] = sv[k] + rt[r * K + k]
        for i in range(nm):
            mi = e_mi[q * d + i]
            for k in range(K):  # D: the responsibility-weighted delta
                dv = dq[i * K + k]
                qv[k] = sv[k] * dv
                tt[mi * K + k] += qv[k]
            for r in range(r0, r1):  # s = sum_k r_k delta_k on the missing coordinates
                s = 0.0
                for k in range(K):
                    s = s + rt[r * K + k] * dq[i * K + k]
                sfull[mi * BLOCK + r] = s
            # (m, m): sum_k R_k delta delta^T; the upper triangle, off-diagonal
            # entries twice (only the symmetric part of g counts)
            s = 0.0
            for k in range(K):
                s = s + qv[k] * dq[i * K + k]
            g[mi * d + mi] += s
            for i2 in range(i + 1, nm):
                s = 0.0
                for k in range(K):
                    s = s + qv[k] * dq[i2 * K + k]
                g[mi * d + e_mi[q * d + i2]] += 2.0 * s
    _tm_accum_sym(xt, rsum, sfull, d, pw, g)
    return ll


cdef double _tm_chunk(const floating* X, const double* w, const long long* rows,
                      const long long* ptr, Py_ssize_t n_pat, Py_ssize_t j0, Py_ssize_t j1,
                      Py_ssize_t d, Py_ssize_t K, const double* centre, const double* proj,
                      const double* h_t, const double* U, const double* L, const double* cc,
                      bint fit, double* nk, double* t, double* g, double* out,
                      int* err) noexcept nogil:
    """Positions j0:j1 of rows pooled into blocks of BLOCK, one entry per pattern
    segment (a segment cut by a block boundary continues as a new entry); the
    entries' conditionals are computed when a block is full. With fit the
    chunk's partials (zeroed here)."""
    cdef Py_ssize_t cap = K * (d + 8 * BLOCK)
    cdef Py_ssize_t n_dbl = (3 * d * d * TM_LANES + 2 * TM_LANES + K + d + BLOCK * d + cap
                             + (4 * d + 2 * K + 5) * BLOCK + 2 * K + d * K)
    cdef double* buf = <double*>malloc(n_dbl * sizeof(double))
    cdef Py_ssize_t* ibuf = <Py_ssize_t*>malloc((d + TM_LANES * d + TM_LANES + 4 * (BLOCK + 1)
                                                 + BLOCK * d + d + 2) * sizeof(Py_ssize_t))
    cdef long long* rid = <long long*>malloc(BLOCK * sizeof(long long))
    cdef double* A
    cdef double* Rv
    cdef double* Ri
    cdef double* s8
    cdef double* det8
    cdef double* cconst
    cdef double* ur
    cdef double* av
    cdef double* pool
    cdef double* xt
    cdef double* z
    cdef double* pw
    cdef double* lp
    cdef double* rt
    cdef double* maha
    cdef double* mx
    cdef double* inv
    cdef double* rsum
    cdef double* wb
    cdef double* sv
    cdef double* qv
    cdef double* sfull
    cdef double* tt
    cdef Py_ssize_t* mi
    cdef Py_ssize_t* lm
    cdef Py_ssize_t* lnm
    cdef Py_ssize_t* e_lo
    cdef Py_ssize_t* e_nm
    cdef Py_ssize_t* e_off
    cdef Py_ssize_t* order
    cdef Py_ssize_t* e_mi
    cdef Py_ssize_t* cnt
    cdef Py_ssize_t p, j, pf, pf_end, hi, nm, size, nb = 0, ne = 0, used = 0
    cdef Py_ssize_t take, col, r, a, i, k, row, mia
    cdef double ll = 0.0, s, y
    cdef const floating* xr
    cdef const double* lrow
    if buf == NULL or ibuf == NULL or rid == NULL:
        err[0] = 1
        free(buf)
        free(ibuf)
        free(rid)
        return 0.0
    A = buf
    Rv = A + d * d * TM_LANES
    Ri = Rv + d * d * TM_LANES
    s8 = Ri + d * d * TM_LANES
    det8 = s8 + TM_LANES
    cconst = det8 + TM_LANES
    ur = cconst + K
    av = ur + d
    pool = av + BLOCK * d
    xt = pool + cap
    z = xt + d * BLOCK
    pw = z + d * BLOCK
    sfull = pw + d * BLOCK
    lp = sfull + d * BLOCK
    rt = lp + K * BLOCK
    maha = rt + K * BLOCK
    mx = maha + BLOCK
    inv = mx + BLOCK
    rsum = inv + BLOCK
    wb = rsum + BLOCK
    sv = wb + BLOCK
    qv = sv + K
    tt = qv + K
    mi = ibuf
    lm = mi + d
    lnm = lm + TM_LANES * d
    e_lo = lnm + TM_LANES
    e_nm = e_lo + (BLOCK + 1)
    e_off = e_nm + (BLOCK + 1)
    order = e_off + (BLOCK + 1)
    e_mi = order + (BLOCK + 1)
    cnt = e_mi + BLOCK * d
    memset(tt, 0, d * K * sizeof(double))
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
        xr = X + rows[ptr[p]] * d
        nm = 0
        for a in range(d):  # missing coordinates, without a branch per coordinate
            mi[nm] = a
            nm += xr[a] != xr[a]
        size = K * nm
        while j < hi:
            if nb == BLOCK or used + size > cap:
                ll += _tm_flush(d, K, nb, ne, e_lo, e_nm, e_mi, e_off, pool, L, h_t, U, proj,
                                cc, xt, av, z, lp, rt, maha, mx, inv, rsum, wb, pw, sfull, sv,
                                qv, order, cnt, lm, lnm, A, Rv, Ri, s8, det8, cconst, rid, fit,
                                nk, t, tt, g, out, err)
                nb = 0
                ne = 0
                used = 0
                if err[0]:
                    break
            e_nm[ne] = nm
            e_off[ne] = used
            for i in range(nm):
                e_mi[ne * d + i] = mi[i]
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
                for a in range(d):  # u0: x - c, zeros at the missing coordinates
                    y = <double>xr[a] - centre[a]
                    ur[a] = 0.0 if y != y else y
                for a in range(d):
                    xt[a * BLOCK + col] = ur[a]
                for i in range(nm):  # av = L[m, :] u0
                    lrow = L + mi[i] * d
                    s = 0.0
                    for a in range(d):
                        s = s + lrow[a] * ur[a]
                    av[col * d + i] = s
            nb += take
            j += take
            ne += 1
            e_lo[ne] = nb
        if err[0]:
            break
    if err[0] == 0 and nb > 0:
        ll += _tm_flush(d, K, nb, ne, e_lo, e_nm, e_mi, e_off, pool, L, h_t, U, proj, cc, xt,
                        av, z, lp, rt, maha, mx, inv, rsum, wb, pw, sfull, sv, qv, order, cnt,
                        lm, lnm, A, Rv, Ri, s8, det8, cconst, rid, fit, nk, t, tt, g, out, err)
    if fit and err[0] == 0:
        for k in range(K):
            for a in range(d):
                t[k * d + a] += tt[a * K + k]
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
    centre, e, proj, h, U, L = _tied.missing_setup(means, prec_chol, comp_const)
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
        centre, _, proj, h, U, L = _tied.missing_setup(means, prec_chol, comp_const)
        _log_prob_missing_tied_impl(X, rows, ptr, centre, proj, np.ascontiguousarray(h.T), U, L,
                                    comp_const, out)
