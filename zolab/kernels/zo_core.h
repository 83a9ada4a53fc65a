/* zolab's CPU draw core: the counter-based draw of reference.py, the thread split, and the element-wise
 * program's layout. Included by zo_cpu.c (the fixed kernels) and by the C that codegen.py writes for one
 * program. Compiled with -ffp-contract=off -fno-math-errno (never -ffast-math): every float operation is
 * rounded as written, so the numbers equal the torch reference and the Triton kernel bit for bit.
 */
#ifndef ZO_CORE_H
#define ZO_CORE_H
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define GOLDEN 0x9E3779B9u
#define W2_SALT 0x632BE5ABu

static inline uint32_t h32(uint32_t x) {
    x ^= x >> 16; x *= 0x7FEB352Du;
    x ^= x >> 15; x *= 0x846CA68Bu;
    x ^= x >> 16;
    return x;
}

static inline float bits_to_float(uint32_t b) { float f; memcpy(&f, &b, 4); return f; }
static inline uint32_t float_to_bits(float f) { uint32_t b; memcpy(&b, &f, 4); return b; }

/* Constants as exact float32 hex literals, the values of reference.py (no decimal rounding in between). */
static inline float log_unit(float u) {
    uint32_t bits = float_to_bits(u);
    int32_t e = (int32_t)(bits >> 23) - 127;
    float m = bits_to_float((bits & 0x7FFFFFu) | 0x3F800000u);
    uint32_t big = (uint32_t)(m > 0x1.6a09e6p+0f);      /* m in [√2, 2): halve it (exact) */
    m = m * bits_to_float(0x3F800000u - (big << 23));    /* × 1 or × 0.5: no branch, so loops vectorise */
    e = e + (int32_t)big;
    float x = m - 1.0f;
    float fe = (float)e;
    float z = x * x;
    float y = 0x1.204376p-4f;
    y = y * x + -0x1.d7a370p-4f;
    y = y * x + 0x1.de4a34p-4f;
    y = y * x + -0x1.fcba9ep-4f;
    y = y * x + 0x1.23d37ep-3f;
    y = y * x + -0x1.555ca0p-3f;
    y = y * x + 0x1.999d58p-3f;
    y = y * x + -0x1.fffff8p-3f;
    y = y * x + 0x1.555554p-2f;
    y = y * x * z;
    y = y + fe * -0x1.bd0106p-13f;
    y = y - z * 0.5f;
    float r = x + y;
    return r + fe * 0x1.63p-1f;
}

/* cos(2πu) and sin(2πu), u = (w2 >> 8)·2^-24 (see reference.turn) */
static inline void turn(uint32_t w2, float *cos_out, float *sin_out) {
    uint32_t q = w2 >> 30;
    float f = (float)((w2 >> 8) & 0x3FFFFFu) * 0x1p-22f;
    float a = f * 0x1.921fb6p+0f;
    float a2 = a * a;
    float c = 0x1.1eed8ep-29f;
    c = c * a2 + -0x1.27e4fcp-22f;
    c = c * a2 + 0x1.a01a02p-16f;
    c = c * a2 + -0x1.6c16c2p-10f;
    c = c * a2 + 0x1.555556p-5f;
    c = c * a2 + -0.5f;
    c = c * a2 + 1.0f;
    float s = 0x1.612462p-33f;
    s = s * a2 + -0x1.ae6456p-26f;
    s = s * a2 + 0x1.71de3ap-19f;
    s = s * a2 + -0x1.a01a02p-13f;
    s = s * a2 + 0x1.111112p-7f;
    s = s * a2 + -0x1.555556p-3f;
    s = s * a2 + 1.0f;
    s = s * a;
    float cv = (q & 1u) ? s : c;
    float sv = (q & 1u) ? c : s;
    *cos_out = (q == 1u || q == 2u) ? -cv : cv;
    *sin_out = q >= 2u ? -sv : sv;
}

static inline uint32_t word1(uint32_t k0, uint32_t k1, uint64_t i) {
    uint32_t lo = (uint32_t)i, hi = (uint32_t)(i >> 32);
    return h32(h32(lo ^ k0) ^ (hi * GOLDEN) ^ k1);
}

/* The Box-Muller pair of counter j: elements 2j (cos) and 2j + 1 (sin). */
static inline void gauss_pair(uint32_t k0, uint32_t k1, uint64_t j, float *even, float *odd) {
    uint32_t w1 = word1(k0, k1, j);
    uint32_t w2 = h32(w1 + W2_SALT);
    float u1 = (float)((w1 >> 8) + 1u) * 0x1p-24f;
    float r = sqrtf(log_unit(u1) * -2.0f);
    float c, s;
    turn(w2, &c, &s);
    *even = r * c;
    *odd = r * s;
}

static inline float gauss_one(uint32_t k0, uint32_t k1, uint64_t i) {
    float e, o;
    gauss_pair(k0, k1, i >> 1, &e, &o);
    return (i & 1) ? o : e;
}

static inline float rad_one(uint32_t k0, uint32_t k1, uint64_t i) {
    return 1.0f - (float)(word1(k0, k1, i) >> 31) * 2.0f;
}

#define MAXK 64

typedef struct {
    int kind, nk;
    uint32_t k0[MAXK], k1[MAXK];
    double alpha[MAXK];
} Draws;

/* ---------------------------------------------------------------- threading: split [0, n) in chunks
 * With OpenMP the chunks run on the OpenMP thread team: linked against libgomp.so.1, which torch has
 * already loaded, that is torch's own team, so no second set of threads competes with torch's spinning
 * workers. Without OpenMP, plain pthreads. */
typedef void (*range_fn)(void *ctx, int64_t a, int64_t b, int tid);

#define MAXT 64
#define MIN_PER_THREAD (1 << 15)

static int team_size(int64_t n, int nthreads) {
    if (nthreads > MAXT) nthreads = MAXT;
    int64_t most = n / MIN_PER_THREAD;
    if (most < nthreads) nthreads = most > 0 ? (int)most : 1;
    return nthreads < 1 ? 1 : nthreads;
}

static void chunk_of(int64_t n, int t, int nt, int64_t *a, int64_t *b) {
    int64_t step = (n + nt - 1) / nt;
    step = (step + 15) & ~(int64_t)15; /* chunk edges on 64-byte lines */
    *a = t * step < n ? t * step : n;
    *b = *a + step < n ? *a + step : n;
}

#ifdef _OPENMP
#include <omp.h>
static void parallel(range_fn fn, void *ctx, int64_t n, int nthreads) {
    int nt = team_size(n, nthreads);
    if (nt == 1) { fn(ctx, 0, n, 0); return; }
#pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num(), got = omp_get_num_threads();
        for (int c = t; c < nt; c += got) { /* got < nt if the runtime gave fewer threads */
            int64_t a, b;
            chunk_of(n, c, nt, &a, &b);
            fn(ctx, a, b, c);
        }
    }
}
#else
typedef struct { range_fn fn; void *ctx; int64_t a, b; int tid; } Job;
static void *run_job(void *p) { Job *j = (Job *)p; j->fn(j->ctx, j->a, j->b, j->tid); return NULL; }

static void parallel(range_fn fn, void *ctx, int64_t n, int nthreads) {
    int nt = team_size(n, nthreads);
    if (nt == 1) { fn(ctx, 0, n, 0); return; }
    pthread_t th[MAXT];
    Job jobs[MAXT];
    int started[MAXT] = {0};
    for (int t = 0; t < nt; t++) {
        int64_t a, b;
        chunk_of(n, t, nt, &a, &b);
        jobs[t] = (Job){fn, ctx, a, b, t};
    }
    for (int t = 1; t < nt; t++)
        if (pthread_create(&th[t], NULL, run_job, &jobs[t]) == 0) started[t] = 1;
        else run_job(&jobs[t]);
    run_job(&jobs[0]);
    for (int t = 1; t < nt; t++)
        if (started[t]) pthread_join(th[t], NULL);
}
#endif

/* Box-Muller pairs j0 … j0 + np − 1 into e[] (cos halves) and o[] (sin halves); the caller interleaves.
 * Three plain loops over the block (the hashes, then the radii, then the turns) rather than one: each loop
 * vectorises, and its iterations are short and independent, so the CPU overlaps them instead of waiting on
 * one long chain of polynomial steps. Each number's operations are the same, so are its bits. */
#define PAIRS 256
static void gauss_pairs(uint32_t k0, uint32_t k1, uint64_t j0, int np, float *restrict e, float *restrict o) {
    const uint32_t lo0 = (uint32_t)j0, hi = (uint32_t)(j0 >> 32);
    if ((uint64_t)lo0 + (uint64_t)np > 0x100000000ull) { /* the block crosses a multiple of 2^32 */
        for (int p = 0; p < np; p++) gauss_pair(k0, k1, j0 + (uint64_t)p, e + p, o + p);
        return;
    }
    const uint32_t kh = (hi * GOLDEN) ^ k1; /* word1 with the high half fixed: 32-bit lanes only */
    uint32_t w1[PAIRS], w2[PAIRS];
    float r[PAIRS];
    for (int p = 0; p < np; p++) {
        uint32_t w = h32(h32((lo0 + (uint32_t)p) ^ k0) ^ kh);
        w1[p] = w;
        w2[p] = h32(w + W2_SALT);
    }
    for (int p = 0; p < np; p++) {
        float u1 = (float)((w1[p] >> 8) + 1u) * 0x1p-24f;
        r[p] = sqrtf(log_unit(u1) * -2.0f);
    }
    for (int p = 0; p < np; p++) {
        float c, s;
        turn(w2[p], &c, &s);
        e[p] = r[p] * c;
        o[p] = r[p] * s;
    }
}

/* Gaussian over [a, b): a lone odd element first, then whole pairs (one hash, log and sqrt per two
 * numbers), then a lone last one. */
#define GAUSS_RANGE(NAME, T)                                                                    \
    static void NAME(T *out, const T *src, int64_t a, int64_t b, uint64_t off, uint32_t k0,     \
                     uint32_t k1, T al) {                                                       \
        if (a < b && ((off + (uint64_t)a) & 1)) {                                               \
            T z = (T)gauss_one(k0, k1, off + (uint64_t)a);                                      \
            out[a] = src ? src[a] + al * z : al * z;                                            \
            a++;                                                                                \
        }                                                                                       \
        if (a < b && ((off + (uint64_t)b) & 1)) {                                               \
            b--;                                                                                \
            T z = (T)gauss_one(k0, k1, off + (uint64_t)b);                                      \
            out[b] = src ? src[b] + al * z : al * z;                                            \
        }                                                                                       \
        float e[PAIRS], o[PAIRS];                                                               \
        for (int64_t s = a; s < b; s += 2 * PAIRS) {                                            \
            int np = (int)((b - s) / 2 < PAIRS ? (b - s) / 2 : PAIRS);                          \
            gauss_pairs(k0, k1, (off + (uint64_t)s) >> 1, np, e, o);                            \
            T *restrict dst = out + s;                                                          \
            if (src) {                                                                          \
                const T *sr = src + s;                                                          \
                for (int p = 0; p < np; p++) {                                                  \
                    T x0 = sr[2 * p], x1 = sr[2 * p + 1];                                       \
                    dst[2 * p] = x0 + al * (T)e[p];                                             \
                    dst[2 * p + 1] = x1 + al * (T)o[p];                                         \
                }                                                                               \
            } else {                                                                            \
                for (int p = 0; p < np; p++) {                                                  \
                    dst[2 * p] = al * (T)e[p];                                                  \
                    dst[2 * p + 1] = al * (T)o[p];                                              \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
    }
GAUSS_RANGE(gauss_range_f32, float)
GAUSS_RANGE(gauss_range_f64, double)
/* ---------------------------------------------------------------- half storage (reference.round_half)
 * A float32 compute type may load and store bfloat16/float16 tensors: loads widen exactly, stores round to
 * nearest even (torch's conversion) or stochastically with the counter bits w1(key, element index). */
enum { ST_SAME, ST_BF16, ST_BF16_SR, ST_F16, ST_F16_SR };

static inline uint16_t round_bf16(float x, int sr, uint32_t w) {
    uint32_t b = float_to_bits(x), a = b & 0x7FFFFFFFu, sign = (b >> 16) & 0x8000u;
    uint32_t add = sr ? (w & 0xFFFFu) : ((a >> 16) & 1u) + 0x7FFFu;
    return (uint16_t)(sign | (a > 0x7F800000u ? 0x7FC0u : (a + add) >> 16));
}

static inline uint16_t round_f16(float x, int sr, uint32_t w) {
    uint32_t b = float_to_bits(x), a = b & 0x7FFFFFFFu, sign = (b >> 16) & 0x8000u;
    if (a > 0x7F800000u) return (uint16_t)(sign | 0x7E00u);
    if (a >= 0x38800000u) { /* |x| >= 2^-14: float16's spacing is 2^13 of x's ulps */
        uint32_t r = (a + (sr ? (w & 0x1FFFu) : ((a >> 13) & 1u) + 0xFFFu)) & ~0x1FFFu;
        return (uint16_t)(sign | (r >= 0x47800000u ? 0x7C00u : (r >> 13) - (112u << 10)));
    }
    float s = bits_to_float(a) * 0x1p24f; /* subnormal range: multiples of 2^-24, exact */
    float k = (float)(uint32_t)s, frac = s - k;
    uint32_t up = sr ? (float)(w >> 8) * 0x1p-24f < frac : (frac > 0.5f) | ((frac == 0.5f) & ((uint32_t)k & 1u));
    return (uint16_t)(sign | ((uint32_t)k + up));
}

static inline float widen_f16(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1Fu, m = h & 0x3FFu;
    if (e == 0) { float f = (float)m * 0x1p-24f; return sign ? -f : f; }
    return bits_to_float(sign | (e == 0x1Fu ? 0x7F800000u | (m << 13) : ((e + 112u) << 23) | (m << 13)));
}

static void load_half(float *restrict d, const uint16_t *restrict src, int64_t len, int st) {
    if (st <= ST_BF16_SR) for (int64_t i = 0; i < len; i++) d[i] = bits_to_float((uint32_t)src[i] << 16);
    else for (int64_t i = 0; i < len; i++) d[i] = widen_f16(src[i]);
}

/* Elements idx0 … idx0 + len − 1 of the run (their indices key the stochastic bits). */
static void store_half(uint16_t *restrict dst, const float *restrict src, int64_t len, int st, uint64_t key,
                       uint64_t idx0) {
    const uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
    const int sr = st == ST_BF16_SR || st == ST_F16_SR;
    if (st <= ST_BF16_SR)
        for (int64_t i = 0; i < len; i++) dst[i] = round_bf16(src[i], sr, sr ? word1(k0, k1, idx0 + (uint64_t)i) : 0);
    else
        for (int64_t i = 0; i < len; i++) dst[i] = round_f16(src[i], sr, sr ? word1(k0, k1, idx0 + (uint64_t)i) : 0);
}

/* ---------------------------------------------------------------- element-wise programs (program.py)
 * A traced program runs CHUNK elements at a time: each instruction is a plain loop over registers that stay in
 * cache (the compiler vectorises each loop), draw slots are rebuilt chunk by chunk (never stored), stores run
 * last in each chunk, so an output may be one of the inputs (in place). Every tensor is in the compute type or,
 * beside float32, in half storage (``storage``: ST_*, per tensor; ``round_key``: a stochastic store's key); the
 * Python entry checks dtype, size, layout and device before anything reaches this code. */
enum { OP_INPUT, OP_DRAW, OP_NEG, OP_SQRT, OP_SIGN, OP_ABS, OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_MAX, OP_MIN,
       OP_GT, OP_LT, OP_WHERE };
#define VM_CHUNK 2048

typedef struct {
    int64_t n; uint64_t offset;
    int nins; const int32_t *ins; /* 6 per instruction: op, dst, a, b, c, kinds (bit i: operand i is a scalar) */
    int nstore; const int32_t *stores; /* 2 per store: tensor, register */
    int nreg; void *const *tensors; const double *scalars;
    const int32_t *slot_law, *slot_nk, *slot_start; const uint64_t *slot_offset, *keys; const double *coefs;
    const int32_t *storage; const uint64_t *round_key;
    int failed;
} Prog;

/* Tensor t's elements s … s + len − 1 of the run, from or to a chunk of the compute type T. A load returns
 * the tensor's own memory when it is of type T, else it widens into ``tmp``. */
#define LOAD_CHUNK(T, c, t, tmp, s, len)                                                        \
    (sizeof(T) == 4 && (c)->storage[t] != ST_SAME                                               \
         ? (load_half((float *)(tmp), (const uint16_t *)(c)->tensors[t] + (s), (len), (c)->storage[t]), (const T *)(tmp)) \
         : (const T *)(c)->tensors[t] + (s))
#define STORE_CHUNK(T, c, t, buf, s, len)                                                       \
    do {                                                                                        \
        if (sizeof(T) == 4 && (c)->storage[t] != ST_SAME)                                       \
            store_half((uint16_t *)(c)->tensors[t] + (s), (const float *)(buf), (len), (c)->storage[t], \
                       (c)->round_key[t], (c)->offset + (uint64_t)(s));                         \
        else memcpy((T *)(c)->tensors[t] + (s), (buf), (size_t)(len) * sizeof(T));              \
    } while (0)


/* Draw slot sl (Σ_k coef_k z(key_k)) for elements s … s + len − 1 of the run into d. */
#define DEF_DRAW_SLOT(NAME, T, GAUSS_FN)                                                        \
    static void NAME(const Prog *c, int sl, T *d, int64_t s, int64_t len) {                     \
        const int nk = c->slot_nk[sl], st = c->slot_start[sl];                                  \
        const uint64_t off = c->slot_offset[sl] + c->offset + (uint64_t)s;                      \
        for (int k = 0; k < nk; k++) {                                                          \
            const uint64_t key = c->keys[st + k];                                               \
            const uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);                      \
            const T al = (T)c->coefs[st + k];                                                   \
            if (c->slot_law[sl] == 1) {                                                         \
                for (int64_t i = 0; i < len; i++) {                                             \
                    T z = al * (T)rad_one(k0, k1, off + (uint64_t)i);                           \
                    d[i] = k == 0 ? z : d[i] + z;                                               \
                }                                                                               \
            } else GAUSS_FN(d, k == 0 ? NULL : d, 0, len, off, k0, k1, al);                     \
        }                                                                                       \
    }
DEF_DRAW_SLOT(draw_slot_f32, float, gauss_range_f32)
DEF_DRAW_SLOT(draw_slot_f64, double, gauss_range_f64)

#endif
