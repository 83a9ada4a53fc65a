/* zolab's CPU kernels: the counter-based draw of reference.py fused with the passes that use it.
 *
 * Built by cpu.py with -O3 -ffp-contract=off -fno-math-errno (never -ffast-math): every float operation
 * is rounded as written, so the numbers equal the torch reference and the Triton kernel bit for bit while
 * the compiler still vectorises the loops. One pass over memory per call; z is never stored.
 */
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

/* ---------------------------------------------------------------- out = base + Σ_k alpha_k z_k */
typedef struct { void *out; const void *base; uint64_t offset; const Draws *d; double *partial; } Axpz;

#define AXPZ_LOOP(T, DRAW)                                                                      \
    if (src) {                                                                                  \
        for (int64_t i = a; i < b; i++) out[i] = src[i] + al * (T)DRAW(k0, k1, off + (uint64_t)i); \
    } else {                                                                                    \
        for (int64_t i = a; i < b; i++) out[i] = al * (T)DRAW(k0, k1, off + (uint64_t)i);        \
    }

/* Box-Muller pairs j0 … j0 + np − 1 into e[] (cos halves) and o[] (sin halves): a plain loop that
 * vectorises; the caller interleaves. */
#define PAIRS 256
static void gauss_pairs(uint32_t k0, uint32_t k1, uint64_t j0, int np, float *restrict e, float *restrict o) {
    for (int p = 0; p < np; p++) {
        uint32_t w1 = word1(k0, k1, j0 + (uint64_t)p);
        uint32_t w2 = h32(w1 + W2_SALT);
        float u1 = (float)((w1 >> 8) + 1u) * 0x1p-24f;
        float r = sqrtf(log_unit(u1) * -2.0f);
        float c, s;
        turn(w2, &c, &s);
        e[p] = r * c;
        o[p] = r * s;
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

#define AXPZ_BODY(T)                                                                            \
    Axpz *c = (Axpz *)ctx;                                                                      \
    T *out = (T *)c->out;                                                                       \
    const Draws *d = c->d;                                                                      \
    const uint64_t off = c->offset;                                                             \
    for (int k = 0; k < d->nk; k++) {                                                           \
        const uint32_t k0 = d->k0[k], k1 = d->k1[k];                                            \
        const T al = (T)d->alpha[k];                                                            \
        const T *src = k == 0 ? (const T *)c->base : out;                                       \
        if (d->kind == 1) { AXPZ_LOOP(T, rad_one) }                                             \
        else GAUSS(out, src, a, b, off, k0, k1, al);                                            \
    }

#define GAUSS gauss_range_f32
static void axpz_f32(void *ctx, int64_t a, int64_t b, int tid) { (void)tid; AXPZ_BODY(float) }
#undef GAUSS
#define GAUSS gauss_range_f64
static void axpz_f64(void *ctx, int64_t a, int64_t b, int tid) { (void)tid; AXPZ_BODY(double) }
#undef GAUSS

/* The K draws loop inside one chunk, so a chunk stays in cache between them (one pass over memory). */
#define CHUNK 4096
static void axpz_chunked(range_fn body, void *ctx, int64_t a, int64_t b, int tid) {
    for (int64_t s = a; s < b; s += CHUNK) body(ctx, s, s + CHUNK < b ? s + CHUNK : b, tid);
}
static void axpz_f32_c(void *ctx, int64_t a, int64_t b, int tid) { axpz_chunked(axpz_f32, ctx, a, b, tid); }
static void axpz_f64_c(void *ctx, int64_t a, int64_t b, int tid) { axpz_chunked(axpz_f64, ctx, a, b, tid); }

static void fill_draws(Draws *d, int kind, int nk, const uint64_t *keys, const double *alpha) {
    d->kind = kind; d->nk = nk;
    for (int k = 0; k < nk; k++) {
        d->k0[k] = (uint32_t)keys[k]; d->k1[k] = (uint32_t)(keys[k] >> 32); d->alpha[k] = alpha[k];
    }
}

/* dtype 0: float32, 1: float64. base may be NULL (out = Σ alpha_k z_k) or equal to out (in place). */
int zo_axpz(void *out, const void *base, int64_t n, uint64_t offset, int dtype, int kind, int nk,
            const uint64_t *keys, const double *alpha, int nthreads) {
    if (nk < 1 || nk > MAXK) return -1;
    Draws d; fill_draws(&d, kind, nk, keys, alpha);
    Axpz c = {out, base, offset, &d, NULL};
    parallel(dtype == 0 ? axpz_f32_c : axpz_f64_c, &c, n, nthreads);
    return 0;
}

/* ---------------------------------------------------------------- element-wise programs (program.py)
 * A traced program runs CHUNK elements at a time: each instruction is a plain loop over registers that stay in
 * cache (the compiler vectorises each loop), draw slots are rebuilt chunk by chunk (never stored), stores run
 * last in each chunk, so an output may be one of the inputs (in place). Every tensor is in the compute type
 * (the Python entry checks dtype, size, layout and device before anything reaches this code). */
enum { OP_INPUT, OP_DRAW, OP_NEG, OP_SQRT, OP_SIGN, OP_ABS, OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_MAX, OP_MIN,
       OP_GT, OP_LT, OP_WHERE };
#define VM_CHUNK 2048

typedef struct {
    int64_t n; uint64_t offset;
    int nins; const int32_t *ins; /* 6 per instruction: op, dst, a, b, c, kinds (bit i: operand i is a scalar) */
    int nstore; const int32_t *stores; /* 2 per store: tensor, register */
    int nreg; void *const *tensors; const double *scalars;
    const int32_t *slot_law, *slot_nk, *slot_start; const uint64_t *slot_offset, *keys; const double *coefs;
    int failed;
} Prog;

#define VM_BODY(T, SQRT, GAUSS_FN)                                                              \
    Prog *c = (Prog *)ctx;                                                                      \
    T *regs = (T *)malloc((size_t)(c->nreg > 0 ? c->nreg : 1) * VM_CHUNK * sizeof(T));          \
    T *sc = (T *)malloc((size_t)3 * VM_CHUNK * sizeof(T)); /* scalar operands, broadcast */      \
    if (!regs || !sc) { free(regs); free(sc); c->failed = 1; return; }                          \
    for (int64_t s = a; s < b; s += VM_CHUNK) {                                                 \
        const int64_t len = b - s < VM_CHUNK ? b - s : VM_CHUNK;                                \
        for (int q = 0; q < c->nins; q++) {                                                     \
            const int32_t *in = c->ins + 6 * q;                                                 \
            const int op = in[0], kinds = in[5];                                                \
            T *d = regs + (int64_t)in[1] * VM_CHUNK;                                            \
            if (op == OP_INPUT) {                                                               \
                memcpy(d, (const T *)c->tensors[in[2]] + s, (size_t)len * sizeof(T));           \
                continue;                                                                       \
            }                                                                                   \
            if (op == OP_DRAW) {                                                                \
                const int sl = in[2], nk = c->slot_nk[sl], st = c->slot_start[sl];              \
                const uint64_t off = c->slot_offset[sl] + c->offset + (uint64_t)s;              \
                for (int k = 0; k < nk; k++) {                                                  \
                    const uint64_t key = c->keys[st + k];                                       \
                    const uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);              \
                    const T al = (T)c->coefs[st + k];                                           \
                    if (c->slot_law[sl] == 1) {                                                 \
                        for (int64_t i = 0; i < len; i++) {                                     \
                            T z = al * (T)rad_one(k0, k1, off + (uint64_t)i);                   \
                            d[i] = k == 0 ? z : d[i] + z;                                       \
                        }                                                                       \
                    } else GAUSS_FN(d, k == 0 ? NULL : d, 0, len, off, k0, k1, al);             \
                }                                                                               \
                continue;                                                                       \
            }                                                                                   \
            /* operands: a register's chunk, or a scalar broadcast into sc (unit stride: loops vectorise) */ \
            const T *x[3];                                                                      \
            for (int j = 0; j < 3; j++) {                                                       \
                if (kinds & (1 << j)) {                                                         \
                    T *v = sc + (int64_t)j * VM_CHUNK; const T val = (T)c->scalars[in[2 + j]];  \
                    for (int64_t i = 0; i < len; i++) v[i] = val;                               \
                    x[j] = v;                                                                   \
                } else {                                                                        \
                    x[j] = regs + (int64_t)(in[2 + j] < 0 ? 0 : in[2 + j]) * VM_CHUNK;          \
                }                                                                               \
            }                                                                                   \
            const T *A = x[0], *B = x[1], *C = x[2];                                            \
            switch (op) {                                                                       \
            case OP_NEG: for (int64_t i = 0; i < len; i++) d[i] = -A[i]; break;            \
            case OP_SQRT: for (int64_t i = 0; i < len; i++) d[i] = SQRT(A[i]); break;      \
            case OP_SIGN:                                                                       \
                for (int64_t i = 0; i < len; i++) d[i] = (T)((A[i] > 0) - (A[i] < 0)); break; \
            case OP_ABS: for (int64_t i = 0; i < len; i++) d[i] = A[i] < 0 ? -A[i] : (A[i] == 0 ? (T)0 : A[i]); break; \
            case OP_ADD: for (int64_t i = 0; i < len; i++) d[i] = A[i] + B[i]; break;  \
            case OP_SUB: for (int64_t i = 0; i < len; i++) d[i] = A[i] - B[i]; break;  \
            case OP_MUL: for (int64_t i = 0; i < len; i++) d[i] = A[i] * B[i]; break;  \
            case OP_DIV: for (int64_t i = 0; i < len; i++) d[i] = A[i] / B[i]; break;  \
            case OP_MAX:                                                                        \
                for (int64_t i = 0; i < len; i++) {                                             \
                    T u = A[i], v = B[i];                                             \
                    d[i] = u != u ? u : (v != v ? v : (u > v ? u : v));                         \
                } break;                                                                        \
            case OP_MIN:                                                                        \
                for (int64_t i = 0; i < len; i++) {                                             \
                    T u = A[i], v = B[i];                                             \
                    d[i] = u != u ? u : (v != v ? v : (u < v ? u : v));                         \
                } break;                                                                        \
            case OP_GT: for (int64_t i = 0; i < len; i++) d[i] = (T)(A[i] > B[i]); break; \
            case OP_LT: for (int64_t i = 0; i < len; i++) d[i] = (T)(A[i] < B[i]); break; \
            case OP_WHERE:                                                                      \
                for (int64_t i = 0; i < len; i++) d[i] = A[i] != 0 ? B[i] : C[i]; break; \
            default: c->failed = 1;                                                             \
            }                                                                                   \
        }                                                                                       \
        for (int q = 0; q < c->nstore; q++) {                                                   \
            const int32_t *st = c->stores + 2 * q;                                              \
            memcpy((T *)c->tensors[st[0]] + s, regs + (int64_t)st[1] * VM_CHUNK, (size_t)len * sizeof(T)); \
        }                                                                                       \
    }                                                                                           \
    free(regs); free(sc);

#define SQRT_F32(x) sqrtf(x)
#define SQRT_F64(x) sqrt(x)
static void prog_f32(void *ctx, int64_t a, int64_t b, int tid) { (void)tid; VM_BODY(float, SQRT_F32, gauss_range_f32) }
static void prog_f64(void *ctx, int64_t a, int64_t b, int tid) { (void)tid; VM_BODY(double, SQRT_F64, gauss_range_f64) }

int zo_program(int dtype, int64_t n, uint64_t offset, int nins, const int32_t *ins, int nstore,
               const int32_t *stores, int nreg, void *const *tensors, const double *scalars,
               const int32_t *slot_law, const int32_t *slot_nk, const int32_t *slot_start,
               const uint64_t *slot_offset, const uint64_t *keys, const double *coefs, int nthreads) {
    Prog c = {n, offset, nins, ins, nstore, stores, nreg, tensors, scalars, slot_law, slot_nk, slot_start,
              slot_offset, keys, coefs, 0};
    parallel(dtype == 0 ? prog_f32 : prog_f64, &c, n, nthreads);
    return c.failed ? -1 : 0;
}

/* K draws, one per row of a (K, n) tensor: row k = z(keys[k]); the threads split the K·n elements. */
typedef struct { void *out; int64_t n; uint64_t offset; int dtype, kind; const uint64_t *keys; } FillRows;

static void fill_rows_body(void *ctx, int64_t a, int64_t b, int tid) {
    (void)tid;
    FillRows *c = (FillRows *)ctx;
    size_t width = c->dtype == 0 ? sizeof(float) : sizeof(double);
    for (int64_t e = a; e < b;) {
        int64_t k = e / c->n, col = e % c->n, len = c->n - col < b - e ? c->n - col : b - e;
        double one = 1.0;
        Draws d; fill_draws(&d, c->kind, 1, &c->keys[k], &one);
        Axpz x = {(char *)c->out + (size_t)k * (size_t)c->n * width, NULL, c->offset, &d, NULL};
        if (c->dtype == 0) axpz_f32_c(&x, col, col + len, 0);
        else axpz_f64_c(&x, col, col + len, 0);
        e += len;
    }
}

int zo_fill_rows(void *out, int64_t n, uint64_t offset, int dtype, int kind, int nk, const uint64_t *keys,
                 int nthreads) {
    if (n < 1 || nk < 1) return 0;
    FillRows c = {out, n, offset, dtype, kind, keys};
    parallel(fill_rows_body, &c, n * (int64_t)nk, nthreads);
    return 0;
}

/* ---------------------------------------------------------------- Σ z² in float64 (sphere's norm)
 * Per block of CHUNK elements: z drawn in pairs (vectorised), squares summed in 8 float64 lanes in a
 * fixed order; block sums added in block order. The result depends on n only, not on the threads. */
typedef struct { uint64_t offset; int64_t n; const Draws *d; double *block; } SumSq;

static void sumsq_body(void *ctx, int64_t a, int64_t b, int tid) {
    (void)tid;
    SumSq *c = (SumSq *)ctx;
    const uint32_t k0 = c->d->k0[0], k1 = c->d->k1[0];
    float z[CHUNK];
    for (int64_t blk = (a + CHUNK - 1) / CHUNK; blk * CHUNK < b; blk++) {
        int64_t s = blk * CHUNK, len = c->n - s < CHUNK ? c->n - s : CHUNK;
        gauss_range_f32(z, NULL, 0, len, c->offset + (uint64_t)s, k0, k1, 1.0f);
        double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        int64_t i = 0;
        for (; i + 8 <= len; i += 8)
            for (int l = 0; l < 8; l++) lane[l] += (double)z[i + l] * (double)z[i + l];
        for (; i < len; i++) lane[i & 7] += (double)z[i] * (double)z[i];
        c->block[blk] = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
    }
}

double zo_sumsq(int64_t n, uint64_t offset, int kind, uint64_t key, int nthreads) {
    if (kind == 1) return (double)n; /* rademacher: z² = 1 */
    double one = 1.0;
    Draws d; fill_draws(&d, kind, 1, &key, &one);
    int64_t nblocks = (n + CHUNK - 1) / CHUNK;
    double *block = (double *)malloc((size_t)(nblocks > 0 ? nblocks : 1) * sizeof(double));
    if (!block) return NAN;
    SumSq c = {offset, n, &d, block};
    parallel(sumsq_body, &c, n, nthreads);
    double total = 0.0;
    for (int64_t k = 0; k < nblocks; k++) total += block[k];
    free(block);
    return total;
}

/* ---------------------------------------------------------------- rows of a perturbed table
 * out[j, :] = base[j, :] + alpha z[rows[j]·dim + (0 … dim−1)]: an embedding lookup of θ + αz without θ + αz */
typedef struct { float *out; const float *base; const int64_t *rows; int64_t dim; const Draws *d; } Rows;

static void rows_f32(void *ctx, int64_t a, int64_t b, int tid) {
    (void)tid;
    Rows *c = (Rows *)ctx;
    const Draws *d = c->d;
    const float al = (float)d->alpha[0];
    for (int64_t j = a; j < b; j++) {
        uint64_t start = (uint64_t)c->rows[j] * (uint64_t)c->dim;
        float *o = c->out + j * c->dim;
        const float *s = c->base + j * c->dim;
        if (d->kind == 1) for (int64_t i = 0; i < c->dim; i++) o[i] = s[i] + al * rad_one(d->k0[0], d->k1[0], start + i);
        else for (int64_t i = 0; i < c->dim; i++) o[i] = s[i] + al * gauss_one(d->k0[0], d->k1[0], start + i);
    }
}

int zo_rows_f32(float *out, const float *base, const int64_t *rows, int64_t nrows, int64_t dim, int kind,
                uint64_t key, double alpha, int nthreads) {
    Draws d; fill_draws(&d, kind, 1, &key, &alpha);
    Rows c = {out, base, rows, dim, &d};
    (void)nthreads; /* a lookup's rows are few: one thread */
    rows_f32(&c, 0, nrows, 0);
    return 0;
}
