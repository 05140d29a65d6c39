// Shared by the CPU kernel sources: vector types, bf16 <-> fp32,
// a vectorised 2^x, and the split of work over torch's OpenMP threads.
// Plain GCC/Clang vector extensions: the same source compiles to AVX-512, AVX2 or NEON.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <cmath>
#ifdef _OPENMP
#include <omp.h>
#endif

// Score vectors are as wide as the CPU's registers: 16 lanes with AVX-512, 8 otherwise. A
// GCC vector wider than the target's registers is expanded piecewise, through memory: 16
// lanes built for AVX2 measured 3-4x slower than 8. Keys still come in blocks of KB = 16
// (padding, the layouts and the dropout mask are the same in every build); a block is
// KB / KW vectors.
#if defined(__AVX512F__)
#define NANOTUI_VK_BYTES 64
#else
#define NANOTUI_VK_BYTES 32
#endif
typedef float vk __attribute__((vector_size(NANOTUI_VK_BYTES)));   // KW keys' scores
typedef int32_t vki __attribute__((vector_size(NANOTUI_VK_BYTES)));
typedef uint32_t vku __attribute__((vector_size(NANOTUI_VK_BYTES)));
typedef float vd __attribute__((vector_size(32)));        // 8 lanes of a head vector
typedef float vk_u __attribute__((vector_size(64), aligned(4)));
typedef float vd_u __attribute__((vector_size(32), aligned(4)));
typedef uint16_t vh_u __attribute__((vector_size(16), aligned(2)));   // 8 bf16
typedef uint32_t vdu __attribute__((vector_size(32)));

static const int KW = NANOTUI_VK_BYTES / 4;   // keys per score vector
static const int KB = 16;                     // keys per block: Tp and nk are multiples
static const float LOG2E = 1.4426950408889634f;

// ---- element loads/stores (bf16 <-> fp32 by bit shifts, round to nearest even) ----------

static inline vd load8(const float* p) { return *(const vd_u*)p; }
static inline vd load8(const uint16_t* p) {
    vdu w = __builtin_convertvector(*(const vh_u*)p, vdu) << 16;
    vd f;
    memcpy(&f, &w, sizeof f);
    return f;
}
static inline void store8(float* p, vd x) { *(vd_u*)p = x; }
static inline void store8(uint16_t* p, vd x) {
    vdu w;
    memcpy(&w, &x, sizeof w);
    w = (w + 0x7fffu + ((w >> 16) & 1u)) >> 16;
    *(vh_u*)p = __builtin_convertvector(w, vh_u);
}

// ---- 2^x for x <= 0 (|rel err| < 2e-7); x below -126 gives 0 ----------------------------

static inline vk exp2_nonpos(vk x0) {
    const vk lo = vk{} - 126.0f;
    vk x = x0 < lo ? lo : x0;
    vki n = __builtin_convertvector(0.5f - x, vki);  // round(-x): -x + 0.5 >= 0, truncates
    vk f = x + __builtin_convertvector(n, vk);      // x = f - n, f in [-0.5, 0.5]
    // Taylor of 2^f = e^(f ln2) to degree 6: truncation error < (0.35^7 / 7!) ~ 1.3e-7
    vk p = f * 1.5403530393381608e-4f + 1.3333558146428443e-3f;
    p = p * f + 9.618129107628477e-3f;
    p = p * f + 5.550410866482158e-2f;
    p = p * f + 2.402265069591007e-1f;
    p = p * f + 6.931471805599453e-1f;
    p = p * f + 1.0f;
    vki bits;
    memcpy(&bits, &p, sizeof bits);
    bits -= n << 23;                                 // times 2^-n
    memcpy(&p, &bits, sizeof p);
    return x0 < lo ? vk{} : p;                       // exact zeros (masked keys: -inf)
}

static inline float hsum(vk x) {
    float s = 0.0f;
    for (int i = 0; i < KW; i++) s += x[i];
    return s;
}
static inline float hmax(vk x) {
    float m = x[0];
    for (int i = 1; i < KW; i++) m = x[i] > m ? x[i] : m;
    return m;
}

// work(i0, i1) on each of `threads` OpenMP threads (the runtime torch uses, so its pool is
// shared rather than fought over), for an even split of [0, N): (batch, head) pairs, or
// blocks of elements.
template <typename Work>
static void over_heads(long BH, int threads, Work work) {
    #pragma omp parallel num_threads(threads)
    {
        int id = 0, n = 1;
#ifdef _OPENMP
        id = omp_get_thread_num();
        n = omp_get_num_threads();
#endif
        work(BH * id / n, BH * (id + 1) / n);
    }
}

