// Fused causal self-attention for CPU training: forward and backward.
//
// Why: at the small head sizes of the course's sweeps (8-32), torch's CPU attention is
// bound by the T x T elementwise work between its matmuls (score matrices written, read by
// the softmax, written again, copied for the transposes), not by FLOPs. Here each block of
// R query rows computes its scores, softmax and output while they are in L1, in fp32,
// and never meets the masked half of the keys. The backward recomputes the probabilities
// from the saved log-sum-exp (as FlashAttention does) instead of storing T x T of them.
//
// Layouts: q, k, v are read straight from c_attn's (B, T, 3C) output and y is written in
// c_proj's (B, T, C) input layout; the backward writes the (B, T, 3C) gradient. No head
// transposes. Tensors are bf16 or fp32 (elem type E); all arithmetic is fp32. Attention
// dropout uses a hashed mask (struct Drop) that the backward regenerates.
// attention_bf16.h is the variant for CPUs with bf16 dot products.
//
// Built at first use by engine/native.py (c++ -O3 -march=native); plain GCC/Clang vector
// extensions, so the same source compiles to AVX-512, AVX2 or NEON.

#include "common.h"

// ---- per-head scratch ----------------------------------------------------------------------

struct Head {
    int T, Tp, D;
    float *qs;   // (Tp, D) q * scale * log2(e), zero rows past T
    float *kt;   // (D, Tp) k transposed, zero columns past T
    float *k;    // (Tp, D)          [backward]
    float *vt;   // (D, Tp) v transposed  [backward]
    float *v;    // (Tp, D)
    float *dO;   // (Tp, D) output gradient  [backward]
    float *dk;   // (Tp, D) accumulators      [backward]
    float *dv;   // (Tp, D)
    float *s;    // (R, Tp) scores / probabilities of a row block
    float *ds;   // (R, Tp) score gradients   [backward]
    float *delta;  // (Tp) dO_i . O_i         [backward]
    float *buf;
};

static Head make_head(int T, int D, int R) {
    Head h;
    h.T = T;
    h.Tp = (T + KB - 1) / KB * KB;
    h.D = D;
    size_t n = (size_t)h.Tp * D;
    size_t total = 8 * n + 2 * (size_t)R * h.Tp + h.Tp;
    h.buf = (float*)aligned_alloc(64, (total * sizeof(float) + 63) / 64 * 64);
    memset(h.buf, 0, total * sizeof(float));
    float* p = h.buf;
    h.qs = p; p += n; h.kt = p; p += n; h.k = p; p += n; h.vt = p; p += n;
    h.v = p; p += n; h.dO = p; p += n; h.dk = p; p += n; h.dv = p; p += n;
    h.s = p; p += (size_t)R * h.Tp; h.ds = p; p += (size_t)R * h.Tp; h.delta = p;
    return h;
}

// Copy head `hd` of batch row `b` in from the (B, T, 3C) qkv tensor.
template <typename E, int D>
static void pack_qkv(Head& h, const E* qkv, int b, int hd, int C, float qscale, bool backward) {
    const int T = h.T, Tp = h.Tp;
    for (int t = 0; t < T; t++) {
        const E* row = qkv + ((size_t)b * T + t) * 3 * C + (size_t)hd * D;
        for (int c = 0; c < D; c += 8) {
            vd q = load8(row + c), k = load8(row + C + c), v = load8(row + 2 * C + c);
            store8(h.qs + (size_t)t * D + c, q * qscale);
            store8(h.v + (size_t)t * D + c, v);
            if (backward) store8(h.k + (size_t)t * D + c, k);
            for (int i = 0; i < 8; i++) {
                h.kt[(size_t)(c + i) * Tp + t] = k[i];
                if (backward) h.vt[(size_t)(c + i) * Tp + t] = v[i];
            }
        }
    }
}

// s[r][j] = a_r . bt[:, j] for keys j < nk (a multiple of KB), R rows from row i0 of a.
// A block of KB keys at a time: with 8-lane vectors, each broadcast of a_r[d] then feeds
// two FMAs, which keeps the loads below the FMAs.
template <int D, int R>
static inline void row_block_dots(const float* a, const float* bt, int Tp, int i0, int nk, float* s) {
    const int V = KB / KW;
    for (int j = 0; j < nk; j += KB) {
        vk acc[R][V] = {};
        for (int d = 0; d < D; d++) {
            vk b[V];
            for (int u = 0; u < V; u++) b[u] = *(const vk*)(bt + (size_t)d * Tp + j + u * KW);
            for (int r = 0; r < R; r++) {
                const float ar = a[(size_t)(i0 + r) * D + d];
                for (int u = 0; u < V; u++) acc[r][u] += ar * b[u];
            }
        }
        for (int r = 0; r < R; r++)
            for (int u = 0; u < V; u++) *(vk*)(s + (size_t)r * Tp + j + u * KW) = acc[r][u];
    }
}

// How many of a head vector's D / 8 columns of 8 the loops below hold in registers at once
// for R rows: as many as keep R rows of accumulators plus one row of operands within the
// vector registers (16 with AVX2, 32 with AVX-512; a few left for the rest), so nothing
// spills to the stack at large head sizes. Columns are independent: no result changes.
static constexpr int col_chunk(int D, int R) {
    const int budget = NANOTUI_VK_BYTES < 64 ? 14 : 28;
    int n = D / 8;
    while (n > 1 && (R + 1) * n > budget) n /= 2;
    return n;
}

// out_r = sum_{j < n} w[r][j] * m[j]  for R rows (m is (Tp, D)), into registers then `out`.
template <int D, int R>
static inline void row_block_combine(const float* w, int Tp, const float* m, int n, vd (*out)[D / 8]) {
    constexpr int N = col_chunk(D, R);
    for (int c0 = 0; c0 < D / 8; c0 += N) {
        vd o[R][N] = {};
        for (int j = 0; j < n; j++) {
            vd mj[N];
            for (int c = 0; c < N; c++) mj[c] = *(const vd*)(m + (size_t)j * D + 8 * (c0 + c));
            for (int r = 0; r < R; r++) {
                float wr = w[(size_t)r * Tp + j];
                for (int c = 0; c < N; c++) o[r][c] += wr * mj[c];
            }
        }
        for (int r = 0; r < R; r++)
            for (int c = 0; c < N; c++) out[r][c0 + c] = o[r][c];
    }
}

// acc[j] += sum_r w[r][j] * x_r  for keys j < n (acc and x are (Tp, D); rows i0.. of x).
template <int D, int R>
static inline void scatter_rows(const float* w, int Tp, const float* x, int i0, int n, float* acc) {
    constexpr int N = col_chunk(D, R);
    for (int c0 = 0; c0 < D / 8; c0 += N) {
        vd xr[R][N];
        for (int r = 0; r < R; r++)
            for (int c = 0; c < N; c++)
                xr[r][c] = *(const vd*)(x + (size_t)(i0 + r) * D + 8 * (c0 + c));
        for (int j = 0; j < n; j++) {
            float* aj = acc + (size_t)j * D + 8 * c0;
            vd a[N];
            for (int c = 0; c < N; c++) a[c] = *(vd*)(aj + 8 * c);
            for (int r = 0; r < R; r++) {
                float wr = w[(size_t)r * Tp + j];
                for (int c = 0; c < N; c++) a[c] += wr * xr[r][c];
            }
            for (int c = 0; c < N; c++) *(vd*)(aj + 8 * c) = a[c];
        }
    }
}

// Row block [i0, i0 + R): keys 0..i0+R-1 are live, padded to nk = multiple of KB.
static inline int live_keys(int i0, int R) { return i0 + R; }
static inline int padded_keys(int i0, int R) { return (i0 + R + KB - 1) / KB * KB; }

// ---- attention dropout ---------------------------------------------------------------------
// The mask is a hash of (seed, pair, query, key) rather than drawn and stored: the backward
// regenerates exactly the forward's mask, and nothing T x T is kept. lowbias32 (C.
// Wellons) is a full-avalanche 32-bit mix; a key is kept when its hash >= p * 2^32.

static inline uint32_t mix32(uint32_t x) {
    x ^= x >> 16; x *= 0x7feb352dU; x ^= x >> 15; x *= 0x846ca68bU; x ^= x >> 16;
    return x;
}
static inline vku mix32(vku x) {
    x ^= x >> 16; x *= 0x7feb352dU; x ^= x >> 15; x *= 0x846ca68bU; x ^= x >> 16;
    return x;
}

struct Drop {
    bool on = false;
    uint32_t threshold = 0;  // keep when hash >= threshold
    float scale = 1.0f;      // 1 / (1 - p)
    uint64_t seed = 0;
    uint32_t pair = 0;       // hash of (seed, batch * H + head), set per head

    Drop(float p, uint64_t seed_) : on(p > 0.0f), seed(seed_) {
        if (on) {
            threshold = (uint32_t)fmin(4294967295.0, (double)p * 4294967296.0);
            scale = 1.0f / (1.0f - p);
        }
    }
    Drop for_pair(int bh) const {
        Drop d = *this;
        d.pair = mix32((uint32_t)seed ^ mix32((uint32_t)bh * 0x9E3779B9U + (uint32_t)(seed >> 32)));
        return d;
    }
    uint32_t row(int i) const { return mix32(pair + (uint32_t)i * 0x85EBCA77U); }
    // all-ones lanes for the kept keys among j .. j + KW - 1 of a row
    vki keep(uint32_t row_key, int j) const {
        vku lane;
        for (int l = 0; l < KW; l++) lane[l] = l;
        vku h = mix32(row_key ^ ((lane + (uint32_t)j) * 0xC2B2AE35U));
        return (vki)(h >= threshold);
    }
};

// Probabilities of row r in place: 2^(s - lse) for j <= i0 + r, 0 after.
static inline void probabilities(float* s, int nk, int last, float lse) {
    for (int j = 0; j < nk; j += KW) {
        vk x = *(vk*)(s + j) - lse;
        *(vk*)(s + j) = exp2_nonpos(x);
    }
    for (int j = last + 1; j < nk; j++) s[j] = 0.0f;
}

template <typename E, int D, int R>
static void forward_head(Head& h, const E* qkv, E* y, float* lse, int b, int hd, int C, const Drop& drop) {
    const int T = h.T, Tp = h.Tp;
    pack_qkv<E, D>(h, qkv, b, hd, C, LOG2E / sqrtf((float)D), false);
    vd o[R][D / 8];
    for (int i0 = 0; i0 < T; i0 += R) {
        const int nk = padded_keys(i0, R);
        row_block_dots<D, R>(h.qs, h.kt, Tp, i0, nk, h.s);
        float denom[R];
        for (int r = 0; r < R; r++) {
            float* s = h.s + (size_t)r * Tp;
            const int last = i0 + r;
            for (int j = last + 1; j < nk; j++) s[j] = -INFINITY;
            vk mv = *(vk*)s;
            for (int j = KW; j < nk; j += KW) {
                vk x = *(vk*)(s + j);
                mv = x > mv ? x : mv;
            }
            const float m = hmax(mv);
            vk sum = {};
            for (int j = 0; j < nk; j += KW) {
                vk p = exp2_nonpos(*(vk*)(s + j) - m);
                *(vk*)(s + j) = p;
                sum += p;
            }
            for (int j = last + 1; j < nk; j++) s[j] = 0.0f;  // exact zeros, masked keys
            const float l = hsum(sum);
            denom[r] = drop.scale / l;
            if (i0 + r < T) lse[i0 + r] = m + log2f(l);
            if (drop.on) {  // the sum above is over all keys; P v over the kept ones
                const uint32_t key = drop.row(i0 + r);
                for (int j = 0; j < nk; j += KW)
                    *(vk*)(s + j) = drop.keep(key, j) ? *(vk*)(s + j) : vk{};
            }
        }
        row_block_combine<D, R>(h.s, Tp, h.v, live_keys(i0, R), o);
        for (int r = 0; r < R && i0 + r < T; r++) {
            E* yr = y + ((size_t)b * T + i0 + r) * C + (size_t)hd * D;
            for (int c = 0; c < D / 8; c++) store8(yr + 8 * c, o[r][c] * denom[r]);
        }
    }
}

template <typename E, int D, int R>
static void backward_head(Head& h, const E* qkv, const E* y, const E* dy, const float* lse,
                          E* dqkv, int b, int hd, int C, const Drop& drop) {
    const int T = h.T, Tp = h.Tp;
    const float scale = 1.0f / sqrtf((float)D);
    pack_qkv<E, D>(h, qkv, b, hd, C, LOG2E * scale, true);
    float* delta = h.delta;
    for (int t = 0; t < Tp; t++) delta[t] = 0.0f;
    for (int t = 0; t < T; t++) {
        const size_t off = ((size_t)b * T + t) * C + (size_t)hd * D;
        vd acc = {};
        for (int c = 0; c < D; c += 8) {
            vd g = load8(dy + off + c);
            store8(h.dO + (size_t)t * D + c, g);
            acc += g * load8(y + off + c);
        }
        float s = 0.0f;
        for (int i = 0; i < 8; i++) s += acc[i];
        delta[t] = s;
    }
    memset(h.dk, 0, sizeof(float) * Tp * D);
    memset(h.dv, 0, sizeof(float) * Tp * D);
    vd dq[R][D / 8];
    for (int i0 = 0; i0 < T; i0 += R) {
        const int nk = padded_keys(i0, R), n = live_keys(i0, R);
        row_block_dots<D, R>(h.qs, h.kt, Tp, i0, nk, h.s);   // scores (log2 domain)
        row_block_dots<D, R>(h.dO, h.vt, Tp, i0, nk, h.ds);  // dP = dO v^T
        for (int r = 0; r < R; r++) {
            float* p = h.s + (size_t)r * Tp;
            float* ds = h.ds + (size_t)r * Tp;
            const bool live = i0 + r < T;
            probabilities(p, nk, i0 + r, live ? lse[i0 + r] : 0.0f);
            if (!live)
                for (int j = 0; j < nk; j++) p[j] = 0.0f;
            const float dr = delta[i0 + r];
            if (!drop.on) {
                for (int j = 0; j < nk; j += KW)               // dS = P (dP - delta)
                    *(vk*)(ds + j) = *(vk*)(p + j) * (*(vk*)(ds + j) - dr);
                continue;
            }
            // with dropout M / (1 - p): dS = P (M dP / (1 - p) - delta), dV from P M / (1 - p)
            const uint32_t key = drop.row(i0 + r);
            for (int j = 0; j < nk; j += KW) {
                const vki keep = drop.keep(key, j);
                const vk pj = *(vk*)(p + j);
                *(vk*)(ds + j) = pj * ((keep ? *(vk*)(ds + j) * drop.scale : vk{}) - dr);
                *(vk*)(p + j) = keep ? pj * drop.scale : vk{};
            }
        }
        row_block_combine<D, R>(h.ds, Tp, h.k, n, dq);       // dQ = dS K
        for (int r = 0; r < R && i0 + r < T; r++) {
            E* g = dqkv + ((size_t)b * T + i0 + r) * 3 * C + (size_t)hd * D;
            for (int c = 0; c < D / 8; c++) store8(g + 8 * c, dq[r][c] * scale);
        }
        scatter_rows<D, R>(h.s, Tp, h.dO, i0, n, h.dv);       // dV += P^T dO
        scatter_rows<D, R>(h.ds, Tp, h.qs, i0, n, h.dk);      // dK += dS^T Q
    }
    // qs carries scale * log2(e); dK wants scale only
    for (int t = 0; t < T; t++) {
        E* g = dqkv + ((size_t)b * T + t) * 3 * C + (size_t)hd * D;
        for (int c = 0; c < D; c += 8) {
            store8(g + C + c, *(vd*)(h.dk + (size_t)t * D + c) * (1.0f / LOG2E));
            store8(g + 2 * C + c, *(vd*)(h.dv + (size_t)t * D + c));
        }
    }
}

// Query rows per block: each load of a key or value row then feeds R rows' FMAs. As many
// as row_block_dots' accumulators (R x KB / KW vectors) leave registers for, at every head
// size (col_chunk keeps the large ones in registers). Measured at 1 thread against 1-2 rows
// at head sizes 32-128: 1.15-1.7x faster (AVX2 build), 1.2-1.9x (AVX-512).
template <int D> struct Rows { static const int R = NANOTUI_VK_BYTES < 64 ? 4 : 8; };

template <typename E, int D>
static void forward_all(const void* qkv, void* y, float* lse, int T, int H, int BH, int threads,
                        const Drop& drop) {
    over_heads(BH, threads, [&](int bh0, int bh1) {
        const int R = Rows<D>::R;
        Head h = make_head(T, D, R);
        for (int bh = bh0; bh < bh1; bh++)
            forward_head<E, D, R>(h, (const E*)qkv, (E*)y, lse + (size_t)bh * T, bh / H, bh % H,
                                  H * D, drop.for_pair(bh));
        free(h.buf);
    });
}

template <typename E, int D>
static void backward_all(const void* qkv, const void* y, const void* dy, const float* lse,
                         void* dqkv, int T, int H, int BH, int threads, const Drop& drop) {
    over_heads(BH, threads, [&](int bh0, int bh1) {
        const int R = Rows<D>::R;
        Head h = make_head(T, D, R);
        for (int bh = bh0; bh < bh1; bh++)
            backward_head<E, D, R>(h, (const E*)qkv, (const E*)y, (const E*)dy, lse + (size_t)bh * T,
                                   (E*)dqkv, bh / H, bh % H, H * D, drop.for_pair(bh));
        free(h.buf);
    });
}

#if defined(__AVX512BF16__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#include "attention_bf16.h"
static int use_dpbf16 = 1;
#define DISPATCH_DPBF16(FN, ...)                                                    \
    if (bf16 && use_dpbf16) switch (D) {                                            \
        case 16: dpbf16::FN<16>(__VA_ARGS__); return 0;                             \
        case 32: dpbf16::FN<32>(__VA_ARGS__); return 0;                             \
        case 64: dpbf16::FN<64>(__VA_ARGS__); return 0;                             \
    }
#else
static int use_dpbf16 = 0;
#define DISPATCH_DPBF16(FN, ...)
#endif

#define DISPATCH(FN, ...)                                                           \
    DISPATCH_DPBF16(FN, __VA_ARGS__)                                                \
    switch (D) {                                                                    \
        case 8: bf16 ? FN<uint16_t, 8>(__VA_ARGS__) : FN<float, 8>(__VA_ARGS__); break;     \
        case 16: bf16 ? FN<uint16_t, 16>(__VA_ARGS__) : FN<float, 16>(__VA_ARGS__); break;  \
        case 32: bf16 ? FN<uint16_t, 32>(__VA_ARGS__) : FN<float, 32>(__VA_ARGS__); break;  \
        case 64: bf16 ? FN<uint16_t, 64>(__VA_ARGS__) : FN<float, 64>(__VA_ARGS__); break;  \
        case 128: bf16 ? FN<uint16_t, 128>(__VA_ARGS__) : FN<float, 128>(__VA_ARGS__); break; \
        default: return -1;                                                         \
    }                                                                               \
    return 0;

extern "C" {

// Head sizes this library handles; others use the torch path.
int attn_supports(int D) { return D == 8 || D == 16 || D == 32 || D == 64 || D == 128; }

// y (B, T, H*D) and lse (B*H, T; log2 domain) from qkv (B, T, 3*H*D), with attention
// dropout `dropout` whose mask is a hash of `seed` (the backward must get the same seed).
// Returns -1 for an unsupported head size.
int attn_forward(const void* qkv, void* y, float* lse, int B, int T, int H, int D, int bf16,
                 int threads, float dropout, uint64_t seed) {
    const Drop drop(dropout, seed);
    DISPATCH(forward_all, qkv, y, lse, T, H, B * H, threads, drop)
}

// dqkv (B, T, 3*H*D) from the forward's input, output and lse, and the output gradient dy.
int attn_backward(const void* qkv, const void* y, const void* dy, const float* lse, void* dqkv,
                  int B, int T, int H, int D, int bf16, int threads, float dropout, uint64_t seed) {
    const Drop drop(dropout, seed);
    DISPATCH(backward_all, qkv, y, dy, lse, dqkv, T, H, B * H, threads, drop)
}

// The attention-dropout keep mask (BH, T, T) as 0/1 bytes, for tests: the same hash the
// kernels use, causal or not.
void attn_dropout_mask(uint8_t* out, int BH, int T, float dropout, uint64_t seed) {
    const Drop drop(dropout, seed);
    const int Tp = (T + KB - 1) / KB * KB;
    for (int bh = 0; bh < BH; bh++) {
        const Drop d = drop.for_pair(bh);
        for (int i = 0; i < T; i++) {
            const uint32_t key = d.row(i);
            for (int j = 0; j < Tp; j += KW) {
                const vki keep = d.keep(key, j);
                for (int l = 0; l < KW && j + l < T; l++)
                    out[((size_t)bh * T + i) * T + j + l] = keep[l] != 0;
            }
        }
    }
}

// Whether bf16 inputs use VDPBF16PS products (1, where the CPU has them) or the fp32 ones;
// returns the setting in force. For A/B benchmarks and tests.
int attn_dpbf16(int on) {
#if defined(__AVX512BF16__) && defined(__AVX512BW__) && defined(__AVX512VL__)
    if (on >= 0) use_dpbf16 = on;
#else
    (void)on;
#endif
    return use_dpbf16;
}

// 1 when built with OpenMP (calls then run on `threads` threads), 0 when serial.
int attn_parallel(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

}
