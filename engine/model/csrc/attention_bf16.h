// The bf16 variant of attention.cpp's kernel for CPUs with AVX512-BF16 (Zen 4, Cooper Lake,
// Sapphire Rapids and later), head sizes that are multiples of 16.
//
// VDPBF16PS multiplies 32 bf16 pairs and adds each pair's sum into 16 fp32 lanes: twice
// the products per instruction of an fp32 FMA. Every product here is a sum over pairs, so
// each operand is packed with the two elements of a pair side by side (32 bits):
//   scores s = q . k   pairs along the head dimension:  k as (D/2, Tp, 2)
//   dP = dO . v        likewise                          v as (D/2, Tp, 2)
//   y = P v, dQ = dS k pairs along keys:                P, dS rows as bf16; v, k as (Tp/2, D, 2)
//   dV += P^T dO, dK += dS^T q  pairs along query rows: P, dS as (R/2, Tp, 2); dO, q rows
//                                                       interleaved two by two
// Softmax, its log-sum-exp and every accumulator stay fp32; P and dS are rounded to bf16
// for the products, as FlashAttention does on GPUs in bf16 training.

#include <immintrin.h>

namespace dpbf16 {

static const int R = 4;  // query rows per block (even: rows pair up)

struct Head {
    int T, Tp, D;
    uint16_t *q, *dO;          // (Tp, D) rows as in the input
    uint16_t *kt2, *vt2;       // (D/2, Tp, 2)
    uint16_t *k2, *v2;         // (Tp/2, D, 2)
    uint16_t *pb, *db;         // (R, Tp) rows of P and dS
    uint16_t *pr, *dr;         // (R/2, Tp, 2) P and dS, two rows side by side
    float *s, *delta, *dk, *dv;  // (R, Tp) scores, (Tp) dO_i . O_i, (Tp, D) x 2
    void* buf;
};

static Head make_head(int T, int D) {
    Head h;
    h.T = T;
    h.Tp = (T + 31) / 32 * 32;  // key pairs and 16-key vectors both whole
    h.D = D;
    const size_t n = (size_t)h.Tp * D, rt = (size_t)R * h.Tp;
    const size_t bytes = 6 * n * 2 + 4 * rt * 2 + (2 * rt + 2 * n) * 4;
    h.buf = aligned_alloc(64, (bytes + 63) / 64 * 64);
    memset(h.buf, 0, bytes);
    uint16_t* p = (uint16_t*)h.buf;
    h.q = p; p += n; h.dO = p; p += n; h.kt2 = p; p += n; h.vt2 = p; p += n;
    h.k2 = p; p += n; h.v2 = p; p += n;
    h.pb = p; p += rt; h.db = p; p += rt; h.pr = p; p += rt; h.dr = p; p += rt;
    float* f = (float*)p;
    h.s = f; f += rt; h.delta = f; f += rt; h.dk = f; f += n; h.dv = f;
    return h;
}

static inline __m512 bcast_pair(const uint16_t* p) {  // a 32-bit pair in all 16 lanes
    uint32_t w;
    memcpy(&w, p, 4);
    return _mm512_castsi512_ps(_mm512_set1_epi32((int)w));
}
static inline __m512 dp(__m512 acc, __m512 a, __m512 b) {
    return _mm512_dpbf16_ps(acc, (__m512bh)a, (__m512bh)b);
}
static inline void store16(uint16_t* p, __m512 x) {  // 16 fp32 -> 16 bf16, round to nearest
    _mm256_storeu_si256((__m256i*)p, (__m256i)_mm512_cvtneps_pbh(x));
}
// 16 bf16 from each of two rows -> (a0, b0, a1, b1, ...)
static inline __m512 interleave(const uint16_t* a, const uint16_t* b) {
    const __m512i idx = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9,
                                         24, 8, 23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1,
                                         16, 0);
    __m512i ab = _mm512_inserti64x4(
        _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i*)a)),
        _mm256_loadu_si256((const __m256i*)b), 1);
    return _mm512_castsi512_ps(_mm512_permutexvar_epi16(idx, ab));
}
// R rows' values for keys [j, j + 16) -> bf16: rows into wb (R, Tp) unless null, row pairs
// side by side into wr (R/2, Tp, 2)
static inline void to_bf16(const __m512* w, int Tp, int j, uint16_t* wb, uint16_t* wr) {
    const __m512i idx = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9,
                                         24, 8, 23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1,
                                         16, 0);
    for (int rp = 0; rp < R / 2; rp++) {
        __m512i ab = (__m512i)_mm512_cvtne2ps_pbh(w[2 * rp + 1], w[2 * rp]);  // row 2rp low
        if (wb) {
            _mm256_store_si256((__m256i*)(wb + (size_t)(2 * rp) * Tp + j), _mm512_castsi512_si256(ab));
            _mm256_store_si256((__m256i*)(wb + (size_t)(2 * rp + 1) * Tp + j),
                               _mm512_extracti64x4_epi64(ab, 1));
        }
        _mm512_store_si512(wr + ((size_t)rp * Tp + j) * 2, _mm512_permutexvar_epi16(idx, ab));
    }
}

// acc[r] = a_r . b_j for the 16 keys from j, R rows from i0 of a (Tp, D), b as (D/2, Tp, 2)
// Two accumulators per row (even and odd pairs, summed at the end): R chains of dependent
// VDPBF16PS alone leave the FMA ports waiting on latency, most at small head sizes.
template <int D>
static inline void dots16(const uint16_t* a, const uint16_t* b2, int Tp, int i0, int j, __m512* acc) {
    __m512 odd[R];
    for (int r = 0; r < R; r++) acc[r] = odd[r] = _mm512_setzero_ps();
    for (int e = 0; e < D / 2; e += 2) {  // D / 2 is even: D is a multiple of 16
        __m512 b0 = _mm512_load_ps((const float*)(b2 + ((size_t)e * Tp + j) * 2));
        __m512 b1 = _mm512_load_ps((const float*)(b2 + ((size_t)(e + 1) * Tp + j) * 2));
        for (int r = 0; r < R; r++) {
            const uint16_t* ar = a + (size_t)(i0 + r) * D + 2 * e;
            acc[r] = dp(acc[r], bcast_pair(ar), b0);
            odd[r] = dp(odd[r], bcast_pair(ar + 2), b1);
        }
    }
    for (int r = 0; r < R; r++) acc[r] = acc[r] + odd[r];
}

// Lanes of keys after query i0 + r set to x, in the 16 keys from j (only the block's last
// 16 keys hold any: i0 is a multiple of R and R divides 16)
static inline void mask_future(__m512* s, int i0, int j, float x) {
    const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    for (int r = 0; r < R; r++) {
        __mmask16 future = _mm512_cmpgt_epi32_mask(lane, _mm512_set1_epi32(i0 + r - j));
        s[r] = _mm512_mask_mov_ps(s[r], future, _mm512_set1_ps(x));
    }
}

// out_r = sum_{j < n} w[r][j] m_j, w as bf16 rows (R, Tp), m as (Tp/2, D, 2); n even
template <int D>
static inline void combine(const uint16_t* wb, int Tp, const uint16_t* m2, int n, __m512 (*out)[D / 16]) {
    // S accumulators per output vector over alternate key pairs (as in dots16): R * D / 16
    // chains are too few at D = 16 (measured: 2 accumulators no faster from D = 32)
    constexpr int S = D >= 32 ? 1 : 2;
    __m512 part[S][R][D / 16];
    for (int k = 0; k < S; k++)
        for (int r = 0; r < R; r++)
            for (int c = 0; c < D / 16; c++) part[k][r][c] = _mm512_setzero_ps();
    int jp = 0;
    for (; jp + S <= n / 2; jp += S)
        for (int k = 0; k < S; k++) {
            __m512 w[R];
            for (int r = 0; r < R; r++) w[r] = bcast_pair(wb + (size_t)r * Tp + 2 * (jp + k));
            for (int c = 0; c < D / 16; c++) {
                __m512 m = _mm512_load_ps((const float*)(m2 + ((size_t)(jp + k) * D + 16 * c) * 2));
                for (int r = 0; r < R; r++) part[k][r][c] = dp(part[k][r][c], w[r], m);
            }
        }
    for (; jp < n / 2; jp++) {
        __m512 w[R];
        for (int r = 0; r < R; r++) w[r] = bcast_pair(wb + (size_t)r * Tp + 2 * jp);
        for (int c = 0; c < D / 16; c++) {
            __m512 m = _mm512_load_ps((const float*)(m2 + ((size_t)jp * D + 16 * c) * 2));
            for (int r = 0; r < R; r++) part[0][r][c] = dp(part[0][r][c], w[r], m);
        }
    }
    for (int r = 0; r < R; r++)
        for (int c = 0; c < D / 16; c++) {
            out[r][c] = part[0][r][c];
            for (int k = 1; k < S; k++) out[r][c] = out[r][c] + part[k][r][c];
        }
}

// acc_j += sum_r w[r][j] x_r for keys j < n; w as (R/2, Tp, 2), x rows i0.. of (Tp, D)
template <int D>
static inline void scatter(const uint16_t* wr, int Tp, const uint16_t* x, int i0, int n, float* acc) {
    __m512 xr[R / 2][D / 16];
    for (int rp = 0; rp < R / 2; rp++)
        for (int c = 0; c < D / 16; c++)
            xr[rp][c] = interleave(x + (size_t)(i0 + 2 * rp) * D + 16 * c,
                                   x + (size_t)(i0 + 2 * rp + 1) * D + 16 * c);
    for (int j = 0; j < n; j++) {
        __m512 w[R / 2];
        for (int rp = 0; rp < R / 2; rp++) w[rp] = bcast_pair(wr + ((size_t)rp * Tp + j) * 2);
        for (int c = 0; c < D / 16; c++) {
            float* a = acc + (size_t)j * D + 16 * c;
            __m512 v = _mm512_load_ps(a);
            for (int rp = 0; rp < R / 2; rp++) v = dp(v, w[rp], xr[rp][c]);
            _mm512_store_ps(a, v);
        }
    }
}

// x (T rows of D bf16, `stride` apart) -> (D/2, Tp, 2): 32-bit pairs gathered 16 rows at a time
template <int D>
static inline void pack_pairs_t(const uint16_t* x, size_t stride, int T, int Tp, uint16_t* out) {
    const __m512i rows = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5,
                                                             4, 3, 2, 1, 0),
                                            _mm512_set1_epi32((int)(stride / 2)));
    int t = 0;
    for (; t + 16 <= T; t += 16)
        for (int e = 0; e < D / 2; e++)
            _mm512_store_si512(out + ((size_t)e * Tp + t) * 2,
                               _mm512_i32gather_epi32(rows, x + (size_t)t * stride + 2 * e, 4));
    for (; t < T; t++)
        for (int e = 0; e < D / 2; e++)
            memcpy(out + ((size_t)e * Tp + t) * 2, x + (size_t)t * stride + 2 * e, 4);
}

// x (T rows of D bf16, `stride` apart) -> (Tp/2, D, 2): rows interleaved two by two
template <int D>
static inline void pack_pairs_rows(const uint16_t* x, size_t stride, int T, uint16_t* out) {
    alignas(64) static thread_local uint16_t zero[D] = {};
    for (int t = 0; t < T; t += 2) {
        const uint16_t* b = t + 1 < T ? x + (size_t)(t + 1) * stride : zero;
        for (int c = 0; c < D; c += 16)
            _mm512_store_ps((float*)(out + ((size_t)(t / 2) * D + c) * 2),
                            interleave(x + (size_t)t * stride + c, b + c));
    }
}

template <int D>
static void pack(Head& h, const uint16_t* qkv, int b, int hd, int C, bool backward) {
    const int T = h.T, Tp = h.Tp;
    const size_t stride = (size_t)3 * C;
    const uint16_t* q = qkv + (size_t)b * T * stride + (size_t)hd * D;
    const uint16_t *k = q + C, *v = q + 2 * C;
    for (int t = 0; t < T; t++) memcpy(h.q + (size_t)t * D, q + t * stride, D * 2);
    pack_pairs_t<D>(k, stride, T, Tp, h.kt2);
    pack_pairs_rows<D>(v, stride, T, h.v2);
    if (backward) {
        pack_pairs_t<D>(v, stride, T, Tp, h.vt2);
        pack_pairs_rows<D>(k, stride, T, h.k2);
    }
}

template <int D>
static void forward_head(Head& h, const uint16_t* qkv, uint16_t* y, float* lse, int b, int hd, int C,
                         const Drop& drop) {
    const int T = h.T, Tp = h.Tp;
    pack<D>(h, qkv, b, hd, C, false);
    const float mul = LOG2E / sqrtf((float)D);
    __m512 o[R][D / 16], sc[R], mx[R], sum[R];
    for (int i0 = 0; i0 < T; i0 += R) {
        const int nk = padded_keys(i0, R);
        // scores (log2 domain) and their row maxima
        for (int r = 0; r < R; r++) mx[r] = _mm512_set1_ps(-INFINITY);
        for (int j = 0; j < nk; j += 16) {
            dots16<D>(h.q, h.kt2, Tp, i0, j, sc);
            for (int r = 0; r < R; r++) sc[r] = sc[r] * mul;
            if (j + 16 == nk) mask_future(sc, i0, j, -INFINITY);
            for (int r = 0; r < R; r++) {
                mx[r] = _mm512_max_ps(mx[r], sc[r]);
                _mm512_store_ps(h.s + (size_t)r * Tp + j, sc[r]);
            }
        }
        float m[R];
        for (int r = 0; r < R; r++) {
            m[r] = _mm512_reduce_max_ps(mx[r]);
            mx[r] = _mm512_set1_ps(m[r]);
            sum[r] = _mm512_setzero_ps();
        }
        // probabilities, their sums, and P in bf16 for the P v products
        uint32_t key[R];
        for (int r = 0; r < R; r++) key[r] = drop.on ? drop.row(i0 + r) : 0;
        for (int j = 0; j < nk; j += 16) {
            for (int r = 0; r < R; r++) {
                sc[r] = (__m512)exp2_nonpos((vk)(_mm512_load_ps(h.s + (size_t)r * Tp + j) - mx[r]));
                sum[r] += sc[r];  // over all keys; P v over the kept ones
                if (drop.on) sc[r] = (__m512)(drop.keep(key[r], j) ? (vk)sc[r] : vk{});
            }
            to_bf16(sc, Tp, j, h.pb, h.pr);
        }
        combine<D>(h.pb, Tp, h.v2, live_keys(i0, R), o);
        for (int r = 0; r < R && i0 + r < T; r++) {
            const float l = _mm512_reduce_add_ps(sum[r]);
            lse[i0 + r] = m[r] + log2f(l);
            uint16_t* yr = y + ((size_t)b * T + i0 + r) * C + (size_t)hd * D;
            for (int c = 0; c < D / 16; c++) store16(yr + 16 * c, o[r][c] * (drop.scale / l));
        }
    }
}

template <int D>
static void backward_head(Head& h, const uint16_t* qkv, const uint16_t* y, const uint16_t* dy,
                          const float* lse, uint16_t* dqkv, int b, int hd, int C, const Drop& drop) {
    const int T = h.T, Tp = h.Tp;
    const float scale = 1.0f / sqrtf((float)D), mul = LOG2E * scale;
    pack<D>(h, qkv, b, hd, C, true);
    float* delta = h.delta;  // dO_i . O_i
    for (int t = 0; t < Tp; t++) delta[t] = 0.0f;
    for (int t = 0; t < T; t++) {
        const size_t off = ((size_t)b * T + t) * C + (size_t)hd * D;
        memcpy(h.dO + (size_t)t * D, dy + off, D * 2);
        vd acc = {};
        for (int c = 0; c < D; c += 8) acc += load8(dy + off + c) * load8(y + off + c);
        float s = 0.0f;
        for (int i = 0; i < 8; i++) s += acc[i];
        delta[t] = s;
    }
    memset(h.dk, 0, sizeof(float) * Tp * D);
    memset(h.dv, 0, sizeof(float) * Tp * D);
    __m512 dq[R][D / 16], p[R], ds[R], l2[R], dl[R];
    for (int i0 = 0; i0 < T; i0 += R) {
        const int nk = padded_keys(i0, R), n = live_keys(i0, R);
        uint32_t key[R];
        for (int r = 0; r < R; r++) {
            key[r] = drop.on ? drop.row(i0 + r) : 0;
            const bool live = i0 + r < T;   // rows past T: P = 0 (lse = +inf)
            l2[r] = _mm512_set1_ps(live ? lse[i0 + r] : INFINITY);
            dl[r] = _mm512_set1_ps(delta[i0 + r]);
        }
        for (int j = 0; j < nk; j += 16) {
            dots16<D>(h.q, h.kt2, Tp, i0, j, p);     // scores
            dots16<D>(h.dO, h.vt2, Tp, i0, j, ds);   // dP = dO v^T
            for (int r = 0; r < R; r++) {
                p[r] = (__m512)exp2_nonpos((vk)(p[r] * mul - l2[r]));
                if (!drop.on) {
                    ds[r] = p[r] * (ds[r] - dl[r]);  // dS = P (dP - delta)
                    continue;
                }
                // with dropout M / (1 - p): dS = P (M dP / (1 - p) - delta), dV from P M / (1 - p)
                const vki keep = drop.keep(key[r], j);
                ds[r] = p[r] * ((__m512)(keep ? (vk)(ds[r] * drop.scale) : vk{}) - dl[r]);
                p[r] = (__m512)(keep ? (vk)(p[r] * drop.scale) : vk{});
            }
            if (j + 16 == nk) {
                mask_future(p, i0, j, 0.0f);
                mask_future(ds, i0, j, 0.0f);
            }
            to_bf16(p, Tp, j, nullptr, h.pr);
            to_bf16(ds, Tp, j, h.db, h.dr);
        }
        combine<D>(h.db, Tp, h.k2, n, dq);                   // dQ = dS K
        for (int r = 0; r < R && i0 + r < T; r++) {
            uint16_t* g = dqkv + ((size_t)b * T + i0 + r) * 3 * C + (size_t)hd * D;
            for (int c = 0; c < D / 16; c++) store16(g + 16 * c, dq[r][c] * scale);
        }
        scatter<D>(h.pr, Tp, h.dO, i0, n, h.dv);              // dV += P^T dO
        scatter<D>(h.dr, Tp, h.q, i0, n, h.dk);               // dK += dS^T Q
    }
    for (int t = 0; t < T; t++) {
        uint16_t* g = dqkv + ((size_t)b * T + t) * 3 * C + (size_t)hd * D;
        for (int c = 0; c < D; c += 16) {
            store16(g + C + c, _mm512_load_ps(h.dk + (size_t)t * D + c) * scale);
            store16(g + 2 * C + c, _mm512_load_ps(h.dv + (size_t)t * D + c));
        }
    }
}

template <int D>
static void forward_all(const void* qkv, void* y, float* lse, int T, int H, int BH, int threads,
                        const Drop& drop) {
    over_heads(BH, threads, [&](int bh0, int bh1) {
        Head h = make_head(T, D);
        for (int bh = bh0; bh < bh1; bh++)
            forward_head<D>(h, (const uint16_t*)qkv, (uint16_t*)y, lse + (size_t)bh * T, bh / H, bh % H,
                            H * D, drop.for_pair(bh));
        free(h.buf);
    });
}

template <int D>
static void backward_all(const void* qkv, const void* y, const void* dy, const float* lse,
                         void* dqkv, int T, int H, int BH, int threads, const Drop& drop) {
    over_heads(BH, threads, [&](int bh0, int bh1) {
        Head h = make_head(T, D);
        for (int bh = bh0; bh < bh1; bh++)
            backward_head<D>(h, (const uint16_t*)qkv, (const uint16_t*)y, (const uint16_t*)dy,
                             lse + (size_t)bh * T, (uint16_t*)dqkv, bh / H, bh % H, H * D,
                             drop.for_pair(bh));
        free(h.buf);
    });
}

}  // namespace dpbf16
