/* zolab's CPU kernels: the counter-based draw of reference.py fused with the passes that use it.
 *
 * Built by cpu.py with -O3 -ffp-contract=off -fno-math-errno (never -ffast-math): every float operation
 * is rounded as written, so the numbers equal the torch reference and the Triton kernel bit for bit while
 * the compiler still vectorises the loops. One pass over memory per call; z is never stored.
 */
#include "zo_core.h"

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

#define VM_BODY(T, SQRT, DRAW_SLOT)                                                              \
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
                if (sizeof(T) == 4 && c->storage[in[2]] != ST_SAME)                                 \
                    load_half((float *)d, (const uint16_t *)c->tensors[in[2]] + s, len, c->storage[in[2]]); \
                else memcpy(d, (const T *)c->tensors[in[2]] + s, (size_t)len * sizeof(T));      \
                continue;                                                                       \
            }                                                                                   \
            if (op == OP_DRAW) { DRAW_SLOT(c, in[2], d, s, len); continue; }                    \
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
            STORE_CHUNK(T, c, st[0], regs + (int64_t)st[1] * VM_CHUNK, s, len);                 \
        }                                                                                       \
    }                                                                                           \
    free(regs); free(sc);

#define SQRT_F32(x) sqrtf(x)
#define SQRT_F64(x) sqrt(x)
static void prog_f32(void *ctx, int64_t a, int64_t b, int tid) { (void)tid; VM_BODY(float, SQRT_F32, draw_slot_f32) }
static void prog_f64(void *ctx, int64_t a, int64_t b, int tid) { (void)tid; VM_BODY(double, SQRT_F64, draw_slot_f64) }

int zo_program(int dtype, int64_t n, uint64_t offset, int nins, const int32_t *ins, int nstore,
               const int32_t *stores, int nreg, void *const *tensors, const double *scalars,
               const int32_t *slot_law, const int32_t *slot_nk, const int32_t *slot_start,
               const uint64_t *slot_offset, const uint64_t *keys, const double *coefs, const int32_t *storage,
               const uint64_t *round_key, int nthreads) {
    Prog c = {n, offset, nins, ins, nstore, stores, nreg, tensors, scalars, slot_law, slot_nk, slot_start,
              slot_offset, keys, coefs, storage, round_key, 0};
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
 * out[j, :] = base[j, :] + alpha z[offset + rows[j]·dim + (0 … dim−1)]: an embedding lookup of θ + αz without
 * θ + αz; without base (NULL), alpha z alone (a rule's noise at the looked-up rows). */
typedef struct { float *out; const float *base; const int64_t *rows; int64_t dim; uint64_t offset; const Draws *d; } Rows;

static void rows_f32(void *ctx, int64_t a, int64_t b, int tid) {
    (void)tid;
    Rows *c = (Rows *)ctx;
    const Draws *d = c->d;
    const float al = (float)d->alpha[0];
    for (int64_t j = a; j < b; j++) {
        uint64_t start = c->offset + (uint64_t)c->rows[j] * (uint64_t)c->dim;
        float *o = c->out + j * c->dim;
        const float *s = c->base ? c->base + j * c->dim : NULL;
        if (d->kind == 1)
            for (int64_t i = 0; i < c->dim; i++) {
                float z = al * rad_one(d->k0[0], d->k1[0], start + i);
                o[i] = s ? s[i] + z : z;
            }
        else gauss_range_f32(o, s, 0, c->dim, start, d->k0[0], d->k1[0], al); /* whole pairs, vectorised */
    }
}

int zo_rows_f32(float *out, const float *base, const int64_t *rows, int64_t nrows, int64_t dim, uint64_t offset,
                int kind, uint64_t key, double alpha, int nthreads) {
    Draws d; fill_draws(&d, kind, 1, &key, &alpha);
    Rows c = {out, base, rows, dim, offset, &d};
    (void)nthreads; /* a lookup's rows are few: one thread */
    rows_f32(&c, 0, nrows, 0);
    return 0;
}
