/* zolab's CPU kernels: the counter-based draw of reference.py fused with the passes that use it.
 *
 * Built by cpu.py with -O3 -ffp-contract=off -fno-math-errno (never -ffast-math): every float operation
 * is rounded as written, so the numbers equal the torch reference and the Triton kernel bit for bit while
 * the compiler still vectorises the loops. One pass over memory per call; z is never stored.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
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

static inline float cos_turn(uint32_t w2) {
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
    float v = (q & 1u) ? s : c;
    return (q == 1u || q == 2u) ? -v : v;
}

static inline uint32_t word1(uint32_t k0, uint32_t k1, uint64_t i) {
    uint32_t lo = (uint32_t)i, hi = (uint32_t)(i >> 32);
    return h32(h32(lo ^ k0) ^ (hi * GOLDEN) ^ k1);
}

static inline float gauss_one(uint32_t k0, uint32_t k1, uint64_t i) {
    uint32_t w1 = word1(k0, k1, i);
    uint32_t w2 = h32(w1 + W2_SALT);
    float u1 = (float)((w1 >> 8) + 1u) * 0x1p-24f;
    float r = sqrtf(log_unit(u1) * -2.0f);
    return r * cos_turn(w2);
}

static inline float rad_one(uint32_t k0, uint32_t k1, uint64_t i) {
    return 1.0f - (float)(word1(k0, k1, i) >> 31) * 2.0f;
}

/* kind 0: gaussian, 1: rademacher (branch outside the loops, so they vectorise) */
static inline float draw_one(uint32_t k0, uint32_t k1, uint64_t i, int kind) {
    return kind == 1 ? rad_one(k0, k1, i) : gauss_one(k0, k1, i);
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
#define MIN_PER_THREAD (1 << 16)

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

#define AXPZ_BODY(T)                                                                            \
    Axpz *c = (Axpz *)ctx;                                                                      \
    T *out = (T *)c->out;                                                                       \
    const Draws *d = c->d;                                                                      \
    const uint64_t off = c->offset;                                                             \
    for (int k = 0; k < d->nk; k++) {                                                           \
        const uint32_t k0 = d->k0[k], k1 = d->k1[k];                                            \
        const T al = (T)d->alpha[k];                                                            \
        const T *src = k == 0 ? (const T *)c->base : out;                                       \
        if (d->kind == 1) { AXPZ_LOOP(T, rad_one) } else { AXPZ_LOOP(T, gauss_one) }            \
    }

static void axpz_f32(void *ctx, int64_t a, int64_t b, int tid) { (void)tid; AXPZ_BODY(float) }
static void axpz_f64(void *ctx, int64_t a, int64_t b, int tid) { (void)tid; AXPZ_BODY(double) }

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

/* ---------------------------------------------------------------- Σ z² in float64 (sphere's norm) */
static void sumsq_body(void *ctx, int64_t a, int64_t b, int tid) {
    Axpz *c = (Axpz *)ctx;
    const Draws *d = c->d;
    double acc = 0.0;
    const uint32_t k0 = d->k0[0], k1 = d->k1[0];
    if (d->kind == 1) {
        acc = (double)(b - a);
    } else {
        for (int64_t i = a; i < b; i++) {
            double z = (double)gauss_one(k0, k1, c->offset + (uint64_t)i);
            acc += z * z;
        }
    }
    c->partial[tid] = acc;
}

double zo_sumsq(int64_t n, uint64_t offset, int kind, uint64_t key, int nthreads) {
    double one = 1.0, partial[MAXT] = {0};
    Draws d; fill_draws(&d, kind, 1, &key, &one);
    Axpz c = {NULL, NULL, offset, &d, partial};
    parallel(sumsq_body, &c, n, nthreads);
    double s = 0.0;
    for (int t = 0; t < MAXT; t++) s += partial[t];
    return s;
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
