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
    int big = m > 0x1.6a09e6p+0f;
    m = big ? m * 0.5f : m;
    e = big ? e + 1 : e;
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

/* ---------------------------------------------------------------- adaptive updates, fused with the draw
 * g = Σ_k α_k z_k is rebuilt chunk by chunk in cache (never stored), then per element (mode):
 *   1 R-AdaZO:  m = β1 m + c1 g;  v = fill ? 1 : β2 v + c2 (m m);  u = m
 *   2 ZO-AdaMM: m = β1 m + c1 g;  v = β2 v + c2 (g g);            u = m
 *   3 RMSProp:                    v = β2 v + c2 (g g);            u = g
 *   d = inside ? sqrt(v + ε) : sqrt(v) + ε;   θ = (θ·decay if decay != 1) − lr·(u / d)
 * One pass over θ, m and v; the order of operations is zolab/kernels/__init__.py's moments(). */
typedef struct {
    void *p, *m, *v; uint64_t offset; const Draws *d;
    int mode, inside, fill; double b1, c1, b2, c2, eps, lr, decay;
    const void *g; /* a given ĝ instead of the draws (a batch of directions drawn once) */
} Moments;

#define MOMENTS_BODY(T, GAUSS_FN)                                                               \
    Moments *c = (Moments *)ctx;                                                                \
    const Draws *d = c->d;                                                                      \
    T *p = (T *)c->p, *m = (T *)c->m, *v = (T *)c->v;                                           \
    const T b1 = (T)c->b1, c1 = (T)c->c1, b2 = (T)c->b2, c2 = (T)c->c2, eps = (T)c->eps;        \
    const T lr = (T)c->lr, decay = (T)c->decay;                                                 \
    T g[CHUNK];                                                                                 \
    for (int64_t s = a; s < b; s += CHUNK) {                                                    \
        const int64_t len = b - s < CHUNK ? b - s : CHUNK;                                      \
        const uint64_t off = c->offset + (uint64_t)s;                                           \
        if (c->g) memcpy(g, (const T *)c->g + s, (size_t)len * sizeof(T));                      \
        for (int k = 0; !c->g && k < d->nk; k++) {                                              \
            const uint32_t k0 = d->k0[k], k1 = d->k1[k];                                        \
            const T al = (T)d->alpha[k];                                                        \
            T *out = g;                                                                         \
            const T *src = k == 0 ? NULL : g;                                                   \
            const int64_t a = 0, b = len;                                                       \
            if (d->kind == 1) { AXPZ_LOOP(T, rad_one) }                                         \
            else GAUSS_FN(g, src, 0, len, off, k0, k1, al);                                     \
        }                                                                                       \
        T *ps = p + s, *ms = m ? m + s : NULL, *vs = v + s;                                     \
        for (int64_t i = 0; i < len; i++) {                                                     \
            T gi = g[i], u, vi;                                                                 \
            if (c->mode == 3) {                                                                 \
                u = gi;                                                                         \
                vi = b2 * vs[i] + c2 * (gi * gi);                                               \
            } else {                                                                            \
                T mi = b1 * ms[i] + c1 * gi;                                                    \
                ms[i] = mi;                                                                     \
                u = mi;                                                                         \
                T x = c->mode == 1 ? mi : gi;                                                   \
                vi = c->fill ? (T)1 : b2 * vs[i] + c2 * (x * x);                                \
            }                                                                                   \
            vs[i] = vi;                                                                         \
            T den = c->inside ? SQRT(vi + eps) : SQRT(vi) + eps;                                \
            T th = decay != (T)1 ? ps[i] * decay : ps[i];                                       \
            ps[i] = th - lr * (u / den);                                                        \
        }                                                                                       \
    }

#define SQRT sqrtf
static void moments_f32(void *ctx, int64_t a, int64_t b, int tid) { (void)tid; MOMENTS_BODY(float, gauss_range_f32) }
#undef SQRT
#define SQRT sqrt
static void moments_f64(void *ctx, int64_t a, int64_t b, int tid) { (void)tid; MOMENTS_BODY(double, gauss_range_f64) }
#undef SQRT

int zo_moments(void *p, void *m, void *v, int64_t n, uint64_t offset, int dtype, int kind, int nk,
               const uint64_t *keys, const double *alpha, int mode, double b1, double c1, double b2, double c2,
               double eps, int inside, int fill, double lr, double decay, int nthreads) {
    if (nk < 1 || nk > MAXK || mode < 1 || mode > 3) return -1;
    Draws d; fill_draws(&d, kind, nk, keys, alpha);
    Moments c = {p, m, v, offset, &d, mode, inside, fill, b1, c1, b2, c2, eps, lr, decay, NULL};
    parallel(dtype == 0 ? moments_f32 : moments_f64, &c, n, nthreads);
    return 0;
}

int zo_moments_g(void *p, void *m, void *v, const void *g, int64_t n, int dtype, int mode, double b1, double c1,
                 double b2, double c2, double eps, int inside, int fill, double lr, double decay, int nthreads) {
    if (mode < 1 || mode > 3) return -1;
    Draws d; d.nk = 0; d.kind = 0;
    Moments c = {p, m, v, 0, &d, mode, inside, fill, b1, c1, b2, c2, eps, lr, decay, g};
    parallel(dtype == 0 ? moments_f32 : moments_f64, &c, n, nthreads);
    return 0;
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
