/* The compiled core: the whole run of a static fleet in one C loop (see sim/engine/core.py).
 *
 * It applies, step by step, the same transitions as the Python engine's per-step reference
 * (sim/engine/replica.py with engine.stepping: iteration, sim/engine/scheduler.py VllmV1Scheduler.plan,
 * sim/engine/state.py start_step/finish_step, sim/cluster/build.py Fleet.dispatch/_route, the routers of
 * sim/cluster/router.py and the change points of sim/metrics/timeseries.py), in the order SimPy would:
 * arrivals first at an instant (they are URGENT events), then step ends and wake-ups in the order they were
 * scheduled. Step prices are the Python performance model's: for the calibrated kernel model the dense part,
 * LM head and prefill attention are computed here from its constants (Kern below), otherwise called back;
 * memoised per token count (dense part, LM head) and per batch size (the decode-attention table, always called
 * back). Random routing draws call the router's numpy generator, so the draws are the same.
 *
 * Every time is computed with the same floating-point operations as the Python engine (now + step_s, the
 * arrival clock's now + (t - now)), so the records agree with it to the last bit where the prices do.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef long long i64;

/* ---------------------------------------------------------------------------------------------------------- */
/* Per-pool settings and step pricing                                                                         */

/* The calibrated kernel model (sim/perf/kernel.py KernelModel) for the operators whose arguments vary with the
 * batch: GEMMs (dense layers, LM head), element-wise kernels, all-reduces and a prefill chunk's attention. Every
 * constant and every running maximum comes from Python (KernelModel.gemm_spec, prefill_spec, allreduce_spec);
 * the arithmetic below repeats the Python methods' operations in their order, with the same libm functions
 * (log2, exp, pow, sqrt), so the prices are the same to the last bit. */
typedef struct { int nd; i64 len[3]; double *knots[3]; double *vals; } Grid;

typedef struct {
    double n, k, wb, act, peak, ce, me, p, floor_s, bw, log2n, log2k;
    Grid g;
    double *run; /* running maximum over the m knots (g.knots[0]) */
} Gemm;

typedef struct {
    int on;
    Gemm gemm[5]; /* QKV, output projection, gate+up, down, LM head */
    double hidden, inter, act_bytes, elem_eff, elem_floor_s, bw;
    int has_ar; double ar_gpus, ar_lat, ar_eff, ar_link; Grid ar; /* over log2 bytes */
    double heads, kvh, hd, kvb, bf16, pf_floor, pf_eff; Grid pf; /* over (log2 batch, log2 length) */
    double *pf_run;  /* running maximum over the length knots (pf.knots[1]) */
} Kern;

static inline i64 bisect_right(const double *k, i64 n, double x) {
    i64 lo = 0, hi = n;
    while (lo < hi) { i64 mid = (lo + hi) / 2; if (x < k[mid]) hi = mid; else lo = mid + 1; }
    return lo;
}

/* sim/perf/curves.py _locate: left knot and fraction, clamped to the outer knots */
static inline i64 locate(double x, const double *k, i64 n, double *f) {
    if (x <= k[0]) { *f = 0.0; return 0; }
    if (x >= k[n - 1]) { *f = 1.0; return n - 2; }
    i64 i = bisect_right(k, n, x) - 1;
    *f = (x - k[i]) / (k[i + 1] - k[i]);
    return i;
}

/* LogGrid.at (one and three axes) and Slice2.at (two) */
static double grid_at(const Grid *g, double x0, double x1, double x2) {
    double f, gg, h;
    i64 i = locate(x0, g->knots[0], g->len[0], &f);
    const double *v = g->vals;
    if (g->nd == 1) return v[i] * (1 - f) + v[i + 1] * f;
    i64 j = locate(x1, g->knots[1], g->len[1], &gg);
    if (g->nd == 2) {
        const double *v0 = v + i * g->len[1], *v1 = v + (i + 1) * g->len[1];
        return (v0[j] * (1 - gg) + v0[j + 1] * gg) * (1 - f) + (v1[j] * (1 - gg) + v1[j + 1] * gg) * f;
    }
    i64 k = locate(x2, g->knots[2], g->len[2], &h);
    i64 s1 = g->len[2], s0 = g->len[1] * g->len[2];
    const double *a = v + i * s0, *b = v + (i + 1) * s0;
#define A(p, jj, kk) (p)[(jj) * s1 + (kk)]
    double lo = (A(a, j, k) * (1 - h) + A(a, j, k + 1) * h) * (1 - gg)
              + (A(a, j + 1, k) * (1 - h) + A(a, j + 1, k + 1) * h) * gg;
    double hi = (A(b, j, k) * (1 - h) + A(b, j, k + 1) * h) * (1 - gg)
              + (A(b, j + 1, k) * (1 - h) + A(b, j + 1, k + 1) * h) * gg;
#undef A
    return lo * (1 - f) + hi * f;
}

static inline double max2(double a, double b) { return b > a ? b : a; } /* Python's max(a, b) */

/* ``t`` raised to the running maximum of the raw time over the knots at or below ``x`` (the monotone envelope of
 * KernelModel.gemm_s and attention_prefill_s; ``run``: that running maximum, one per knot) */
static inline double knot_max(double t, double x, const double *kn, i64 len, const double *run) {
    if (!(x >= kn[0])) return t;
    i64 j = bisect_right(kn, len, x) - 1;
    if (j > len - 1) j = len - 1;
    return max2(t, run[j]);
}

/* KernelModel.gemm_s: no time for no tokens (a step that samples no row runs no LM head) */
static double gemm_s(const Gemm *G, i64 m_tokens) {
    if (m_tokens <= 0) return 0.0;
    double m = (double)m_tokens;
    double flops = 2.0 * m * G->n * G->k;
    double moved = G->n * G->k * G->wb + m * G->k * G->act + m * G->n * 2.0;
    double tc = flops / (G->peak * G->ce);
    double tm = moved / (G->bw * G->me);
    double p = G->p;
    double x = log2(m);
    double t = (G->floor_s + pow(pow(tc, p) + pow(tm, p), 1 / p)) * exp(grid_at(&G->g, x, G->log2n, G->log2k));
    t = max2(max2(t, flops / G->peak), moved / G->bw);
    return knot_max(t, x, G->g.knots[0], G->g.len[0], G->run);
}

/* TransformerStepModel.dense_layer_s */
static double dense_layer_s(const Kern *K, i64 tokens) {
    double t = gemm_s(&K->gemm[0], tokens);
    t += gemm_s(&K->gemm[1], tokens);
    t += gemm_s(&K->gemm[2], tokens);
    t += gemm_s(&K->gemm[3], tokens);
    /* KernelModel.elementwise_s */
    double elem_bytes = (double)tokens * (4 * K->hidden + 3 * K->inter) * K->act_bytes;
    t += elem_bytes / (K->bw * K->elem_eff) + K->elem_floor_s;
    double ar = 0.0;
    if (K->has_ar) { /* KernelModel.allreduce_s */
        double n_bytes = (double)tokens * K->hidden * K->act_bytes;
        double bus = 2 * (K->ar_gpus - 1) / K->ar_gpus * n_bytes;
        double v = K->ar_lat + bus / (K->ar_link * K->ar_eff) * exp(grid_at(&K->ar, log2(n_bytes), 0, 0));
        ar = max2(v, bus / K->ar_link);
    }
    t += 2 * ar;
    return t;
}

/* KernelModel._prefill_raw at batch 1 */
static double prefill_raw(const Kern *K, double length) {
    double flops = 4.0 * 1.0 * K->heads * K->hd * length * (length + 1) / 2;
    double t = K->pf_floor + flops / (K->bf16 * K->pf_eff);
    return t * exp(grid_at(&K->pf, 0.0, log2(length), 0));
}

/* KernelModel.attention_prefill_s of one sequence: ``chunk`` new tokens over ``cached`` ones */
static double prefill_attention_s(const Kern *K, i64 cached, i64 chunk) {
    double pairs = (double)(chunk * cached) + (double)(chunk * (chunk + 1)) / 2;
    double flops = 4.0 * 1.0 * K->heads * K->hd * pairs;
    double kv = (double)(cached + chunk) * 2 * K->kvh * K->hd * K->kvb;
    double moved = 1.0 * (kv + 2 * (double)chunk * K->heads * K->hd * K->act_bytes);
    double sol = max2(flops / K->bf16, moved / K->bw);
    double length = (sqrt(1 + 8 * pairs) - 1) / 2;
    double t = prefill_raw(K, length);
    t = knot_max(t, log2(length), K->pf.knots[1], K->pf.len[1], K->pf_run);
    return max2(t, sol);
}

typedef struct {
    i64 max_seqs, max_tokens, bs, total_blocks, max_model_len;
    int chunked, reserve_whole;
    int kind; /* 0: transformer (callbacks), 1: constant */
    double const_step_s, const_per_token_s;
    double n_layers, ovh_s, per_seq_s, eager_s, scale;
    i64 cg_max;
    int overlap, plain;
    double *dense; i64 dense_len; /* NaN: not asked yet */
    double *head; i64 head_len;
    double **tables; i64 *table_len; i64 tables_cap; /* per batch size: -1 not asked, 0 none */
    PyObject *cb_dense, *cb_head, *cb_table, *cb_decode, *cb_prefill, *kern_spec;
    Kern kern; /* on: priced here rather than by the dense, head and prefill callbacks */
} Pool;

static int grow_doubles(double **p, i64 *len, i64 need) {
    if (need < *len) return 0;
    i64 n = *len ? *len : 64;
    while (n <= need) n *= 2;
    double *q = realloc(*p, (size_t)n * sizeof(double));
    if (!q) { PyErr_NoMemory(); return -1; }
    for (i64 i = *len; i < n; i++) q[i] = NAN;
    *p = q; *len = n;
    return 0;
}

static int call_double(PyObject *cb, PyObject *args, double *out) {
    PyObject *r = PyObject_CallObject(cb, args);
    Py_DECREF(args);
    if (!r) return -1;
    *out = PyFloat_AsDouble(r);
    Py_DECREF(r);
    if (*out == -1.0 && PyErr_Occurred()) return -1;
    return 0;
}

/* The dense part (which = 0) or LM head (1) at ``key`` tokens, memoised. */
static int memo(Pool *p, int which, i64 key, double *out) {
    double **arr = which ? &p->head : &p->dense;
    i64 *len = which ? &p->head_len : &p->dense_len;
    if (grow_doubles(arr, len, key) < 0) return -1;
    double v = (*arr)[key];
    if (isnan(v)) {
        if (p->kern.on) v = which ? gemm_s(&p->kern.gemm[4], key) : dense_layer_s(&p->kern, key);
        else if (call_double(which ? p->cb_head : p->cb_dense, Py_BuildValue("(L)", key), &v) < 0) return -1;
        (*arr)[key] = v;
    }
    *out = v;
    return 0;
}

/* TransformerStepModel.decode_attention_s */
static int decode_attention(Pool *p, i64 n, i64 kv_tokens, double *out) {
    if (n >= p->tables_cap) {
        i64 cap = p->tables_cap ? p->tables_cap : 64;
        while (cap <= n) cap *= 2;
        double **t = realloc(p->tables, (size_t)cap * sizeof(double *));
        if (!t) { PyErr_NoMemory(); return -1; }
        i64 *l = realloc(p->table_len, (size_t)cap * sizeof(i64));
        if (!l) { p->tables = t; PyErr_NoMemory(); return -1; }
        for (i64 i = p->tables_cap; i < cap; i++) { t[i] = NULL; l[i] = -1; }
        p->tables = t; p->table_len = l; p->tables_cap = cap;
    }
    if (p->table_len[n] < 0) {
        PyObject *r = PyObject_CallFunction(p->cb_table, "L", n);
        if (!r) return -1;
        p->table_len[n] = 0;
        if (r != Py_None) { /* a contiguous float64 array: copied whole */
            Py_buffer b;
            if (PyObject_GetBuffer(r, &b, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0) { Py_DECREF(r); return -1; }
            Py_ssize_t m = b.len / (Py_ssize_t)sizeof(double);
            double *t = NULL;
            if (!b.format || strcmp(b.format, "d") != 0 || b.itemsize != (Py_ssize_t)sizeof(double))
                PyErr_SetString(PyExc_TypeError, "decode table: not a float64 array");
            else if (!(t = malloc((size_t)(m ? m : 1) * sizeof(double))))
                PyErr_NoMemory();
            else
                memcpy(t, b.buf, (size_t)m * sizeof(double));
            PyBuffer_Release(&b);
            Py_DECREF(r);
            if (!t) return -1;
            p->tables[n] = t;
            p->table_len[n] = m;
        } else {
            Py_DECREF(r);
        }
    }
    double mean_kv = (double)kv_tokens / (double)n;
    i64 len = p->table_len[n];
    double x = len > 0 ? log2(mean_kv) * 64.0 : -1.0;
    if (x < 0 || x >= (double)(len - 1)) {
        return call_double(p->cb_decode, Py_BuildValue("(Ld)", n, mean_kv), out);
    }
    i64 i = (i64)x;
    double lo = p->tables[n][i];
    *out = lo + (p->tables[n][i + 1] - lo) * (x - (double)i);
    return 0;
}

/* TransformerStepModel.step_time_s (and ConstantStepModel's) of one planned step. */
static int step_time(Pool *p, i64 num_tokens, i64 num_seqs, const i64 *chunk_c, const i64 *chunk_n, i64 n_chunks,
                     i64 n_decodes, i64 decode_kv, i64 n_sampled, double *out) {
    if (p->kind == 1) {
        *out = p->const_step_s + p->const_per_token_s * (double)num_tokens;
        return 0;
    }
    if (num_tokens == 0) { *out = p->ovh_s; return 0; }
    double layer, v, head;
    if (memo(p, 0, num_tokens, &layer) < 0) return -1;
    for (i64 k = 0; k < n_chunks; k++) {
        if (p->kern.on) v = prefill_attention_s(&p->kern, chunk_c[k], chunk_n[k]);
        else if (call_double(p->cb_prefill, Py_BuildValue("(LL)", chunk_c[k], chunk_n[k]), &v) < 0) return -1;
        layer += v;
    }
    if (n_decodes) {
        if (decode_attention(p, n_decodes, decode_kv, &v) < 0) return -1;
        layer += v;
    }
    double t = p->n_layers * layer;
    if (memo(p, 1, n_sampled, &head) < 0) return -1;
    if (!p->plain) {
        double host = p->ovh_s + p->per_seq_s * (double)num_seqs;
        if (num_tokens > p->cg_max) host += p->eager_s;
        double gpu = (t + head) * p->scale;
        *out = p->overlap ? (host > gpu ? host : gpu) : gpu + host;
        return 0;
    }
    t += head + p->ovh_s + p->per_seq_s * (double)num_seqs;
    if (num_tokens > p->cg_max) t += p->eager_s;
    *out = t;
    return 0;
}

/* ---------------------------------------------------------------------------------------------------------- */
/* Requests, replicas, the event heap                                                                         */

/* numpy's bit generator interface (numpy/random/bitgen.h, handed out in the "BitGenerator" capsule) */
typedef struct {
    void *state;
    uint64_t (*next_uint64)(void *st);
    uint32_t (*next_uint32)(void *st);
    double (*next_double)(void *st);
    uint64_t (*next_raw)(void *st);
} BitGen;

enum { ST_IN_FLIGHT = 0, ST_FINISHED = 1, ST_TOO_LONG = 2, ST_NO_REPLICAS = 3 };
enum { IDLE = 0, WOKEN = 1, STEPPING = 2 };
enum { R_ROUND_ROBIN = 0, R_RANDOM = 1, R_LEAST = 2, R_JSQ_TOKENS = 3, R_P2C = 4 };

/* The requests in flight, one slot each (a slot is reused once its request has ended, so memory follows the
 * number in flight, not the number of requests). */
typedef struct {
    i64 *id, *prompt, *output, *replica, *preempt, *status;
    int32_t *computed, *generated, *kv; /* tokens and blocks of one request: far below 2**31 (core.py checks) */
    double *arrival, *sched, *first, *last, *maxitl, *finish;
    i64 cap, *free_slots, n_free;
} Reqs;

static int slots_grow(Reqs *q) {
    i64 cap = q->cap ? 2 * q->cap : 1024;
#define G(f, T) do { T *p_ = realloc(q->f, (size_t)cap * sizeof(T)); if (!p_) { PyErr_NoMemory(); return -1; } q->f = p_; } while (0)
    G(id, i64); G(prompt, i64); G(output, i64); G(replica, i64); G(preempt, i64); G(status, i64);
    G(computed, int32_t); G(generated, int32_t); G(kv, int32_t);
    G(arrival, double); G(sched, double); G(first, double); G(last, double); G(maxitl, double); G(finish, double);
    G(free_slots, i64);
#undef G
    for (i64 k = cap - 1; k >= q->cap; k--) q->free_slots[q->n_free++] = k; /* lowest slot first */
    q->cap = cap;
    return 0;
}

static void slots_free(Reqs *q) {
    free(q->id); free(q->prompt); free(q->output); free(q->replica); free(q->preempt); free(q->status);
    free(q->computed); free(q->generated); free(q->kv);
    free(q->arrival); free(q->sched); free(q->first); free(q->last); free(q->maxitl); free(q->finish);
    free(q->free_slots);
}

/* Ended requests' records, in the order they ended, handed to Python a chunk at a time. */
typedef struct {
    i64 *id, *replica, *preempt, *status;
    double *arrival, *sched, *first, *maxitl, *finish;
    i64 n, cap;
    PyObject *cb;
} Recs;

static PyObject *recs_tuple(Recs *w) {
    return Py_BuildValue("(NNNNNNNNN)", PyBytes_FromStringAndSize((const char *)w->id, w->n * 8),
                         PyBytes_FromStringAndSize((const char *)w->arrival, w->n * 8),
                         PyBytes_FromStringAndSize((const char *)w->replica, w->n * 8),
                         PyBytes_FromStringAndSize((const char *)w->preempt, w->n * 8),
                         PyBytes_FromStringAndSize((const char *)w->status, w->n * 8),
                         PyBytes_FromStringAndSize((const char *)w->sched, w->n * 8),
                         PyBytes_FromStringAndSize((const char *)w->first, w->n * 8),
                         PyBytes_FromStringAndSize((const char *)w->maxitl, w->n * 8),
                         PyBytes_FromStringAndSize((const char *)w->finish, w->n * 8));
}

static int recs_flush(Recs *w, double now) {
    if (!w->n) return 0;
    PyObject *cols = recs_tuple(w);
    if (!cols) return -1;
    PyObject *res = PyObject_CallFunction(w->cb, "Od", cols, now);
    Py_DECREF(cols);
    if (!res) return -1;
    Py_DECREF(res);
    w->n = 0;
    return 0;
}

static int recs_add(Recs *w, double now, i64 id, double arrival, i64 replica, i64 preempt, i64 status,
                    double sched, double first, double maxitl, double finish) {
    if (w->n == w->cap && recs_flush(w, now) < 0) return -1;
    i64 i = w->n++;
    w->id[i] = id; w->arrival[i] = arrival; w->replica[i] = replica; w->preempt[i] = preempt;
    w->status[i] = status; w->sched[i] = sched; w->first[i] = first; w->maxitl[i] = maxitl; w->finish[i] = finish;
    return 0;
}

static void recs_free(Recs *w) {
    free(w->id); free(w->replica); free(w->preempt); free(w->status);
    free(w->arrival); free(w->sched); free(w->first); free(w->maxitl); free(w->finish);
}

typedef struct {
    i64 pool;
    i64 *run; i64 n_run;
    i64 *wq; i64 wq_head, wq_len, wq_cap;
    i64 free_blocks, out_tokens;
    int state;
    /* the step in progress */
    i64 *s_req, *s_n; i64 n_sched;
    /* what the monitor last heard */
    i64 m_run, m_wait, m_kv, kv_sampled; int m_busy;
} Rep;

typedef struct { double t; i64 seq; i64 rep; } Ev;

typedef struct {
    Ev *a; i64 n, cap;
} Heap;

static int ev_less(const Ev *x, const Ev *y) { return x->t < y->t || (x->t == y->t && x->seq < y->seq); }

static int heap_push(Heap *h, Ev e) {
    if (h->n == h->cap) {
        i64 cap = h->cap ? 2 * h->cap : 256;
        Ev *a = realloc(h->a, (size_t)cap * sizeof(Ev));
        if (!a) { PyErr_NoMemory(); return -1; }
        h->a = a; h->cap = cap;
    }
    i64 i = h->n++;
    while (i > 0) {
        i64 parent = (i - 1) / 2;
        if (!ev_less(&e, &h->a[parent])) break;
        h->a[i] = h->a[parent];
        i = parent;
    }
    h->a[i] = e;
    return 0;
}

static Ev heap_pop(Heap *h) {
    Ev top = h->a[0], last = h->a[--h->n];
    i64 i = 0;
    for (;;) {
        i64 c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && ev_less(&h->a[c + 1], &h->a[c])) c++;
        if (!ev_less(&h->a[c], &last)) break;
        h->a[i] = h->a[c];
        i = c;
    }
    if (h->n) h->a[i] = last;
    return top;
}

/* Pool change points (sim/metrics/timeseries.py PoolMonitor), coalesced per instant. */
typedef struct {
    double *t; i64 *pool, *run, *wait, *kv, *busy, *kvtot;
    i64 n, cap;
    i64 *agg;      /* per pool: running, waiting, kv used, busy replicas, kv total */
    i64 *last_row; /* per pool: index of its last row, -1 none */
    i64 n_pools;
    i64 chunk; PyObject *cb; /* rows are handed to cb this many at a time (bounded memory) */
} Rows;

static PyObject *rows_bytes(const void *p, i64 n) { return PyBytes_FromStringAndSize(p ? (const char *)p : "", n * 8); }

/* The rows so far, as seven byte strings (time, pool, running, waiting, KV used, busy replicas, KV total). */
static PyObject *rows_tuple(Rows *w) {
    return Py_BuildValue("(NNNNNNN)", rows_bytes(w->t, w->n), rows_bytes(w->pool, w->n), rows_bytes(w->run, w->n),
                         rows_bytes(w->wait, w->n), rows_bytes(w->kv, w->n), rows_bytes(w->busy, w->n),
                         rows_bytes(w->kvtot, w->n));
}

static int rows_add(Rows *r, double now, i64 pool) {
    i64 *a = r->agg + 5 * pool;
    i64 i = r->last_row[pool];
    if ((i < 0 || r->t[i] != now) && r->cb != Py_None && r->n >= r->chunk && r->t[r->n - 1] < now) {
        /* every row so far is before now, so final (PoolMonitor._row): hand them over */
        PyObject *rows = rows_tuple(r);
        if (!rows) return -1;
        PyObject *res = PyObject_CallObject(r->cb, rows);
        Py_DECREF(rows);
        if (!res) return -1;
        Py_DECREF(res);
        r->n = 0;
        for (i64 k = 0; k < r->n_pools; k++) r->last_row[k] = -1;
        i = -1;
    }
    if (i < 0 || r->t[i] != now) {
        if (r->n == r->cap) {
            i64 cap = r->cap ? 2 * r->cap : 1024;
#define GROW(f, T) do { T *q = realloc(r->f, (size_t)cap * sizeof(T)); if (!q) { PyErr_NoMemory(); return -1; } r->f = q; } while (0)
            GROW(t, double); GROW(pool, i64); GROW(run, i64); GROW(wait, i64); GROW(kv, i64); GROW(busy, i64);
            GROW(kvtot, i64);
#undef GROW
            r->cap = cap;
        }
        i = r->last_row[pool] = r->n++;
        r->t[i] = now;
        r->pool[i] = pool;
    }
    r->run[i] = a[0]; r->wait[i] = a[1]; r->kv[i] = a[2]; r->busy[i] = a[3]; r->kvtot[i] = a[4];
    return 0;
}

typedef struct {
    Pool *pools; i64 n_pools;
    Rep *reps; i64 n_reps;
    Reqs q;
    Heap heap; i64 seq;
    Rows rows;
    double now;
    i64 unfinished, n_order;
    Recs recs;
    int arrivals_over, done;
    double end_s;
    i64 events;
    i64 *steps_of; double *busy_of, *step_end_of; /* per replica */
    int router; i64 rr_next; PyObject *cb_rand; BitGen *bitgen; /* bitgen: NULL, or draws made here */
    i64 longest_len, shortest_len;
    i64 *elig; /* scratch: the replicas a long request may go to */
    /* scratch for one plan */
    i64 *pre, *adm, *cc, *cn; i64 scratch_cap;
} Core;

/* Replica._report */
static int report(Core *c, Rep *r, int busy, int sample_kv) {
    Pool *p = &c->pools[r->pool];
    if (sample_kv) r->kv_sampled = p->total_blocks - r->free_blocks;
    i64 run = r->n_run, wait = r->wq_len, kv = r->kv_sampled;
    if (run == r->m_run && wait == r->m_wait && kv == r->m_kv && busy == r->m_busy) return 0;
    i64 *a = c->rows.agg + 5 * r->pool;
    a[0] += run - r->m_run; a[1] += wait - r->m_wait; a[2] += kv - r->m_kv; a[3] += busy - r->m_busy;
    int structural = run != r->m_run || wait != r->m_wait || busy != r->m_busy;
    r->m_run = run; r->m_wait = wait; r->m_kv = kv; r->m_busy = busy;
    return structural ? rows_add(&c->rows, c->now, r->pool) : 0;
}

static int wq_push(Rep *r, i64 id, int front) {
    if (r->wq_len == r->wq_cap) {
        i64 cap = r->wq_cap ? 2 * r->wq_cap : 16;
        i64 *w = malloc((size_t)cap * sizeof(i64));
        if (!w) { PyErr_NoMemory(); return -1; }
        for (i64 i = 0; i < r->wq_len; i++) w[i] = r->wq[(r->wq_head + i) % r->wq_cap];
        free(r->wq);
        r->wq = w; r->wq_head = 0; r->wq_cap = cap;
    }
    if (front) {
        r->wq_head = (r->wq_head + r->wq_cap - 1) % r->wq_cap;
        r->wq[r->wq_head] = id;
    } else {
        r->wq[(r->wq_head + r->wq_len) % r->wq_cap] = id;
    }
    r->wq_len++;
    return 0;
}

#define WQ(r, i) ((r)->wq[((r)->wq_head + (i)) % (r)->wq_cap])

static inline i64 blocks_for(i64 tokens, i64 bs) { return (tokens + bs - 1) / bs; }

static int schedule(Core *c, double t, i64 rep) {
    c->events++;
    return heap_push(&c->heap, (Ev){t, c->seq++, rep});
}

static void check_done(Core *c) {
    if (c->arrivals_over && c->unfinished == 0 && !c->done) { c->done = 1; c->end_s = c->now; }
}

/* One resumption of Replica.run: plan and start the next step, or go idle. */
static int replica_loop(Core *c, i64 ri) {
    Rep *r = &c->reps[ri];
    Pool *p = &c->pools[r->pool];
    Reqs *q = &c->q;
    i64 bs = p->bs;
    for (;;) {
        if (r->n_run == 0 && r->wq_len == 0) {
            r->state = IDLE;
            return report(c, r, 0, 1);
        }
        /* VllmV1Scheduler.plan (no decode group) */
        i64 budget = p->max_tokens, free_b = r->free_blocks;
        i64 n_pre = 0, n_adm = 0, n_chunks = 0, n_dec = 0, dkv = 0, sampled = 0, qlen = r->n_run, i = 0, tokens = 0;
        r->n_sched = 0;
        while (i < qlen && budget > 0) {
            i64 id = r->run[i];
            i64 cmp = q->computed[id];
            i64 n = q->prompt[id] + q->generated[id] - cmp;
            if (n > budget) n = budget;
            i64 need = blocks_for(cmp + n, bs) - q->kv[id];
            int self_preempted = 0;
            while (need > free_b) {
                i64 victim = r->run[--qlen];
                free_b += q->kv[victim];
                c->pre[n_pre++] = victim;
                if (victim == id) { self_preempted = 1; break; }
            }
            if (self_preempted) break;
            free_b -= need;
            r->s_req[r->n_sched] = id; r->s_n[r->n_sched] = n; r->n_sched++;
            budget -= n; tokens += n;
            i++;
            i64 prompt = q->prompt[id];
            if (n == 1 && cmp >= prompt) { n_dec++; dkv += cmp + 1; }
            else { c->cc[n_chunks] = cmp; c->cn[n_chunks] = n; n_chunks++; }
            if (cmp + n == prompt + q->generated[id]) sampled++;
        }
        if (n_pre == 0 && r->wq_len > 0) {
            i64 seqs = qlen;
            i64 headroom = 0;
            if (p->reserve_whole) {
                headroom = p->total_blocks;
                for (i64 k = 0; k < r->n_run; k++) {
                    i64 id = r->run[k];
                    headroom -= blocks_for(q->prompt[id] + q->output[id], bs);
                }
            }
            for (i64 k = 0; k < r->wq_len; k++) {
                if (budget <= 0 || seqs >= p->max_seqs) break;
                i64 id = WQ(r, k);
                i64 cmp = q->computed[id];
                i64 n = q->prompt[id] + q->generated[id] - cmp;
                if (!p->chunked && n > budget) break;
                if (n > budget) n = budget;
                i64 need = blocks_for(cmp + n, bs) - q->kv[id];
                if (need > free_b) break;
                if (p->reserve_whole) {
                    i64 whole = blocks_for(q->prompt[id] + q->output[id], bs) - q->kv[id];
                    if (whole > headroom) break;
                    headroom -= whole;
                }
                free_b -= need; budget -= n; tokens += n; seqs++;
                c->adm[n_adm++] = id;
                r->s_req[r->n_sched] = id; r->s_n[r->n_sched] = n; r->n_sched++;
                i64 prompt = q->prompt[id];
                if (n == 1 && cmp >= prompt) { n_dec++; dkv += cmp + 1; }
                else { c->cc[n_chunks] = cmp; c->cn[n_chunks] = n; n_chunks++; }
                if (cmp + n == prompt + q->generated[id]) sampled++;
            }
        }
        /* start_step */
        for (i64 k = 0; k < n_pre; k++) {
            i64 id = c->pre[k];
            r->n_run--; /* the victim is the last running request */
            r->free_blocks += q->kv[id];
            q->kv[id] = 0;
            q->computed[id] = 0;
            q->preempt[id]++;
            if (wq_push(r, id, 1) < 0) return -1;
        }
        for (i64 k = 0; k < n_adm; k++) {
            i64 id = c->adm[k];
            r->wq_head = (r->wq_head + 1) % r->wq_cap;
            r->wq_len--;
            r->run[r->n_run++] = id;
            if (isnan(q->sched[id])) q->sched[id] = c->now;
        }
        for (i64 k = 0; k < r->n_sched; k++) {
            i64 id = r->s_req[k];
            i64 need = blocks_for(q->computed[id] + r->s_n[k], bs) - q->kv[id];
            if (need) { q->kv[id] += need; r->free_blocks -= need; }
        }
        if (r->free_blocks < 0) {
            PyErr_SetString(PyExc_RuntimeError, "compiled core: KV blocks over-allocated");
            return -1;
        }
        if (r->n_sched == 0) {
            if (n_pre == 0) {
                PyErr_Format(PyExc_RuntimeError, "replica %lld: scheduler made no progress with work queued", ri);
                return -1;
            }
            continue; /* everything was preempted: plan again at the same instant */
        }
        if (report(c, r, 1, n_adm > 0 || n_pre > 0) < 0) return -1;
        double step_s;
        if (step_time(p, tokens, n_chunks + n_dec, c->cc, c->cn, n_chunks, n_dec, dkv, sampled, &step_s) < 0)
            return -1;
        r->state = STEPPING;
        c->steps_of[ri]++;
        c->busy_of[ri] += step_s;
        c->step_end_of[ri] = c->now + step_s;
        return schedule(c, c->now + step_s, ri);
    }
}

/* finish_step and Replica._release at the end of replica ``ri``'s step. */
static int finish_step(Core *c, i64 ri) {
    Rep *r = &c->reps[ri];
    Reqs *q = &c->q;
    double now = c->now;
    i64 n_fin = 0;
    for (i64 k = 0; k < r->n_sched; k++) {
        i64 id = r->s_req[k];
        i64 cmp = q->computed[id] += r->s_n[k];
        if (cmp == q->prompt[id] + q->generated[id]) {
            q->generated[id]++;
            if (isnan(q->first[id])) q->first[id] = now;
            else if (now - q->last[id] > q->maxitl[id]) q->maxitl[id] = now - q->last[id];
            q->last[id] = now;
            if (q->generated[id] >= q->output[id]) {
                q->finish[id] = now;
                q->status[id] = ST_FINISHED;
                r->free_blocks += q->kv[id];
                q->kv[id] = 0;
                c->adm[n_fin++] = id; /* the scratch list holds the finished, in scheduled order */
            }
        }
    }
    r->n_sched = 0;
    if (!n_fin) return 0;
    i64 w = 0;
    for (i64 k = 0; k < r->n_run; k++) {
        i64 id = r->run[k];
        if (q->status[id] != ST_FINISHED) r->run[w++] = id;
    }
    r->n_run = w;
    for (i64 k = 0; k < n_fin; k++) {
        i64 id = c->adm[k];
        r->out_tokens -= q->prompt[id] + q->output[id];
        c->unfinished--;
        c->n_order++;
        if (recs_add(&c->recs, now, q->id[id], q->arrival[id], q->replica[id], q->preempt[id], ST_FINISHED, q->sched[id],
                     q->first[id], q->maxitl[id], q->finish[id]) < 0) return -1;
        q->free_slots[q->n_free++] = id;
        check_done(c);
    }
    return report(c, r, r->n_run > 0, 1);
}

/* Generator.integers(n) for 1 <= n <= 2**32 - 1, drawn as numpy draws it: Lemire's multiply-and-reject over one
 * 32-bit output per try (https://arxiv.org/abs/1805.10941). core.py checks it against numpy before using it. */
static uint32_t lemire_below(BitGen *g, uint32_t n) {
    uint64_t m = (uint64_t)g->next_uint32(g->state) * n;
    uint32_t low = (uint32_t)m;
    if (low < n) {
        uint32_t threshold = (uint32_t)(UINT32_MAX - (n - 1)) % n;
        while (low < threshold) {
            m = (uint64_t)g->next_uint32(g->state) * n;
            low = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}

static int rand_below(Core *c, i64 n, i64 *out) {
    if (c->bitgen && n >= 1 && n < (i64)UINT32_MAX) {
        *out = n == 1 ? 0 : (i64)lemire_below(c->bitgen, (uint32_t)n);
        return 0;
    }
    PyObject *res = PyObject_CallFunction(c->cb_rand, "L", n);
    if (!res) return -1;
    *out = PyLong_AsLongLong(res);
    Py_DECREF(res);
    if (*out == -1 && PyErr_Occurred()) return -1;
    return 0;
}

#define REP_OF(k) (elig ? elig[k] : (k))
#define OUTSTANDING(k) (c->reps[REP_OF(k)].n_run + c->reps[REP_OF(k)].wq_len)

/* Fleet.dispatch and _route, the router's choice and Replica.submit, for request ``rid`` arriving now. */
static int dispatch(Core *c, i64 rid, i64 prompt, i64 output) {
    Reqs *q = &c->q;
    i64 total = prompt + output;
    if (total > c->longest_len) {
        c->n_order++;
        return recs_add(&c->recs, c->now, rid, c->now, -1, 0, ST_TOO_LONG, NAN, NAN, 0.0, NAN);
    }
    if (!q->n_free && slots_grow(q) < 0) return -1;
    i64 id = q->free_slots[--q->n_free];
    q->id[id] = rid; q->prompt[id] = prompt; q->output[id] = output;
    q->computed[id] = q->generated[id] = q->kv[id] = 0;
    q->preempt[id] = 0; q->status[id] = ST_IN_FLIGHT;
    q->arrival[id] = c->now;
    q->sched[id] = q->first[id] = q->finish[id] = NAN;
    q->last[id] = q->maxitl[id] = 0.0;
    c->unfinished++;
    i64 n = c->n_reps, *elig = NULL;
    if (total > c->shortest_len) {
        n = 0;
        for (i64 k = 0; k < c->n_reps; k++)
            if (c->pools[c->reps[k].pool].max_model_len >= total) c->elig[n++] = k;
        elig = c->elig;
    }
    i64 pick = 0;
    switch (c->router) {
    case R_ROUND_ROBIN:
        pick = c->rr_next % n;
        c->rr_next++;
        break;
    case R_RANDOM:
        if (rand_below(c, n, &pick) < 0) return -1;
        break;
    case R_LEAST: {
        i64 best = -1;
        for (i64 k = 0; k < n; k++) {
            i64 v = OUTSTANDING(k);
            if (best < 0 || v < best) { best = v; pick = k; }
        }
        break;
    }
    case R_JSQ_TOKENS: {
        i64 best = 0;
        for (i64 k = 0; k < n; k++) {
            i64 v = c->reps[REP_OF(k)].out_tokens;
            if (k == 0 || v < best) { best = v; pick = k; }
        }
        break;
    }
    case R_P2C: {
        if (n == 1) { pick = 0; break; }
        i64 a, b;
        if (rand_below(c, n, &a) < 0 || rand_below(c, n - 1, &b) < 0) return -1;
        b += b >= a;
        pick = OUTSTANDING(a) <= OUTSTANDING(b) ? a : b;
        break;
    }
    default:
        PyErr_SetString(PyExc_ValueError, "compiled core: unknown router");
        return -1;
    }
    i64 ri = REP_OF(pick);
    Rep *r = &c->reps[ri];
    q->replica[id] = ri;
    r->out_tokens += total;
    if (wq_push(r, id, 0) < 0) return -1;
    if (report(c, r, r->n_run > 0, 0) < 0) return -1;
    if (r->state == IDLE) {
        r->state = WOKEN;
        return schedule(c, c->now, ri);
    }
    return 0;
}

static int simulate(Core *c, const double *arrival_in, const i64 *prompt, const i64 *output, i64 n_req) {
    double cur = 0.0;
    i64 ai = 0;
    if (n_req == 0) { c->arrivals_over = 1; check_done(c); }
    i64 until_check = 1 << 16;
    while (!c->done) {
        if (--until_check == 0) { /* Ctrl-C and other signals, now and then */
            until_check = 1 << 16;
            if (PyErr_CheckSignals() < 0) return -1;
        }
        if (ai < n_req) {
            double t = arrival_in[ai];
            /* replay(): the clock moves by a timeout of t - now, so the arrival is at now + (t - now) */
            double ta = t > cur ? cur + (t - cur) : cur;
            if (c->heap.n == 0 || ta <= c->heap.a[0].t) {
                if (t > cur) c->events++;
                cur = c->now = ta;
                if (dispatch(c, ai, prompt[ai], output[ai]) < 0) return -1;
                ai++;
                if (ai == n_req) { c->arrivals_over = 1; check_done(c); }
                continue;
            }
        }
        if (c->heap.n == 0) break;
        Ev e = heap_pop(&c->heap);
        c->now = e.t;
        if (c->reps[e.rep].state == STEPPING && finish_step(c, e.rep) < 0) return -1;
        if (replica_loop(c, e.rep) < 0) return -1;
    }
    return recs_flush(&c->recs, c->now);
}

/* ---------------------------------------------------------------------------------------------------------- */
/* Python entry                                                                                                */

/* A float64 array (anything with the buffer protocol, or a sequence of floats) copied into fresh memory. */
static double *copy_doubles(PyObject *o, i64 *n) {
    PyObject *seq = PySequence_Fast(o, "kernel spec: not a sequence of floats");
    if (!seq) return NULL;
    Py_ssize_t m = PySequence_Fast_GET_SIZE(seq);
    double *out = malloc((size_t)(m ? m : 1) * sizeof(double));
    if (!out) { Py_DECREF(seq); PyErr_NoMemory(); return NULL; }
    for (Py_ssize_t i = 0; i < m; i++) {
        out[i] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(seq, i));
        if (out[i] == -1.0 && PyErr_Occurred()) { free(out); Py_DECREF(seq); return NULL; }
    }
    Py_DECREF(seq);
    *n = m;
    return out;
}

static int grid_get(Grid *g, int nd, PyObject **knots, PyObject *vals) {
    i64 total = 1, n;
    g->nd = nd;
    for (int a = 0; a < nd; a++) {
        if (!(g->knots[a] = copy_doubles(knots[a], &g->len[a]))) return -1;
        if (g->len[a] < 2) { PyErr_SetString(PyExc_ValueError, "kernel spec: a grid axis needs two knots"); return -1; }
        total *= g->len[a];
    }
    if (!(g->vals = copy_doubles(vals, &n))) return -1;
    if (n != total) { PyErr_SetString(PyExc_ValueError, "kernel spec: grid values do not match its knots"); return -1; }
    return 0;
}

static void grid_free(Grid *g) {
    for (int a = 0; a < 3; a++) free(g->knots[a]);
    free(g->vals);
}

static void kern_free(Kern *K) {
    for (int i = 0; i < 5; i++) { grid_free(&K->gemm[i].g); free(K->gemm[i].run); }
    grid_free(&K->ar); grid_free(&K->pf); free(K->pf_run);
}

/* TransformerStepModel.kernel_spec: (five GEMM specs, (hidden, intermediate, activation bytes, element-wise
 * efficiency, element-wise floor, bandwidth), all-reduce spec or None, prefill spec) */
static int kern_get(Kern *K, PyObject *spec) {
    PyObject *gemms, *consts, *ar, *pf, *kn[3], *vals, *run;
    if (!PyArg_ParseTuple(spec, "OOOO;kernel spec", &gemms, &consts, &ar, &pf)) return -1;
    if (!PyArg_ParseTuple(consts, "dddddd;kernel spec constants", &K->hidden, &K->inter, &K->act_bytes,
                          &K->elem_eff, &K->elem_floor_s, &K->bw)) return -1;
    for (int i = 0; i < 5; i++) {
        Gemm *G = &K->gemm[i];
        PyObject *g = PySequence_GetItem(gemms, i);
        if (!g) return -1;
        int ok = PyArg_ParseTuple(g, "ddddddddddOOOOO;gemm spec", &G->n, &G->k, &G->wb, &G->act, &G->peak, &G->ce,
                                  &G->me, &G->p, &G->floor_s, &G->bw, &kn[0], &kn[1], &kn[2], &vals, &run);
        if (ok) ok = grid_get(&G->g, 3, kn, vals) == 0;
        i64 n;
        if (ok) ok = (G->run = copy_doubles(run, &n)) != NULL;
        if (ok && n != G->g.len[0]) { PyErr_SetString(PyExc_ValueError, "gemm spec: running maximum"); ok = 0; }
        Py_DECREF(g);
        if (!ok) return -1;
        G->log2n = log2(G->n);
        G->log2k = log2(G->k);
    }
    K->has_ar = ar != Py_None;
    if (K->has_ar) {
        if (!PyArg_ParseTuple(ar, "ddddOO;all-reduce spec", &K->ar_gpus, &K->ar_lat, &K->ar_eff, &K->ar_link, &kn[0],
                              &vals)) return -1;
        if (grid_get(&K->ar, 1, kn, vals) < 0) return -1;
    }
    double bw;
    if (!PyArg_ParseTuple(pf, "ddddddddOOOO;prefill spec", &K->heads, &K->kvh, &K->hd, &K->kvb, &K->bf16, &bw,
                          &K->pf_floor, &K->pf_eff, &kn[0], &kn[1], &vals, &run)) return -1;
    if (grid_get(&K->pf, 2, kn, vals) < 0) return -1;
    i64 n;
    if (!(K->pf_run = copy_doubles(run, &n))) return -1;
    if (n != K->pf.len[1] || bw != K->bw) { PyErr_SetString(PyExc_ValueError, "prefill spec"); return -1; }
    K->on = 1;
    return 0;
}

typedef struct { Py_buffer b; int held; } Buf;

/* A contiguous float64 ('d') or int64 ('q') array of n items; written to only where its name starts "out". */
static void *buf_get(PyObject *o, Buf *buf, char kind, i64 n, const char *name) {
    int flags = PyBUF_FORMAT | PyBUF_C_CONTIGUOUS | (strncmp(name, "out", 3) == 0 ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(o, &buf->b, flags) < 0) return NULL;
    buf->held = 1;
    const char *f = buf->b.format ? buf->b.format : "B";
    int ok = buf->b.itemsize == 8 && (kind == 'd' ? strcmp(f, "d") == 0 : (strcmp(f, "l") == 0 || strcmp(f, "q") == 0));
    if (!ok || (n >= 0 && buf->b.len != n * 8)) {
        PyErr_Format(PyExc_ValueError, "compiled core: %s must be a %s array of %lld items", name,
                     kind == 'd' ? "float64" : "int64", n);
        return NULL;
    }
    return buf->b.buf;
}

static void core_free(Core *c) {
    for (i64 k = 0; k < c->n_pools; k++) {
        Pool *p = &c->pools[k];
        free(p->dense); free(p->head);
        kern_free(&p->kern);
        for (i64 i = 0; i < p->tables_cap; i++) free(p->tables[i]);
        free(p->tables); free(p->table_len);
    }
    free(c->pools);
    for (i64 k = 0; k < c->n_reps; k++) {
        Rep *r = &c->reps[k];
        free(r->run); free(r->wq); free(r->s_req); free(r->s_n);
    }
    free(c->reps);
    slots_free(&c->q);
    recs_free(&c->recs);
    free(c->heap.a);
    Rows *w = &c->rows;
    free(w->t); free(w->pool); free(w->run); free(w->wait); free(w->kv); free(w->busy); free(w->kvtot);
    free(w->agg); free(w->last_row);
    free(c->elig); free(c->pre); free(c->adm); free(c->cc); free(c->cn);
}

static PyObject *core_run(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *o[9];
    PyObject *pools_list, *cb_rand, *cb_rows, *capsule, *cb_records;
    int router;
    long long longest, shortest, row_chunk, record_chunk;
    if (!PyArg_ParseTuple(args, "OOOOOOiOLLOOOLOOLO", &o[0], &o[1], &o[2], &o[3], &pools_list, &o[5], &router,
                          &cb_rand, &longest, &shortest, &o[6], &o[7], &o[8], &row_chunk, &cb_rows, &capsule,
                          &record_chunk, &cb_records))
        return NULL;
    Buf bufs[9];
    memset(bufs, 0, sizeof bufs);
    Core c;
    memset(&c, 0, sizeof c);
    PyObject *result = NULL;
    i64 n_req = PyObject_Length(o[0]);
    i64 n_rep = PyObject_Length(o[3]);
    i64 n_pools = PyObject_Length(pools_list);
    if (n_req < 0 || n_rep < 0 || n_pools < 0) goto done;
    double *arrival_in = buf_get(o[0], &bufs[0], 'd', n_req, "arrival_s");
    i64 *prompt_in = buf_get(o[1], &bufs[1], 'q', n_req, "prompt_tokens");
    i64 *output_in = buf_get(o[2], &bufs[2], 'q', n_req, "output_tokens");
    i64 *rep_pool = buf_get(o[3], &bufs[3], 'q', n_rep, "replica pools");
    i64 *agg_init = buf_get(o[5], &bufs[5], 'q', 5 * n_pools, "pool aggregates");
    c.steps_of = buf_get(o[6], &bufs[6], 'q', n_rep, "out steps");
    c.busy_of = buf_get(o[7], &bufs[7], 'd', n_rep, "out busy");
    c.step_end_of = buf_get(o[8], &bufs[8], 'd', n_rep, "out step end");
    if (!arrival_in || !prompt_in || !output_in || !rep_pool || !agg_init || !c.steps_of || !c.busy_of
        || !c.step_end_of)
        goto done;
    Recs *rc = &c.recs;
    rc->cap = record_chunk > 0 ? record_chunk : 1;
    rc->cb = cb_records;
    size_t nr = (size_t)rc->cap;
    rc->id = malloc(nr * sizeof(i64)); rc->replica = malloc(nr * sizeof(i64));
    rc->preempt = malloc(nr * sizeof(i64)); rc->status = malloc(nr * sizeof(i64));
    rc->arrival = malloc(nr * sizeof(double)); rc->sched = malloc(nr * sizeof(double));
    rc->first = malloc(nr * sizeof(double)); rc->maxitl = malloc(nr * sizeof(double));
    rc->finish = malloc(nr * sizeof(double));
    if (!rc->id || !rc->replica || !rc->preempt || !rc->status || !rc->arrival || !rc->sched || !rc->first
        || !rc->maxitl || !rc->finish) { PyErr_NoMemory(); goto done; }
    c.pools = calloc((size_t)(n_pools ? n_pools : 1), sizeof(Pool));
    c.reps = calloc((size_t)(n_rep ? n_rep : 1), sizeof(Rep));
    c.rows.agg = calloc((size_t)(5 * n_pools + 1), sizeof(i64));
    c.rows.last_row = calloc((size_t)(n_pools + 1), sizeof(i64));
    c.elig = calloc((size_t)(n_rep + 1), sizeof(i64));
    if (!c.pools || !c.reps || !c.rows.agg || !c.rows.last_row
        || !c.elig) { PyErr_NoMemory(); goto done; }
    c.n_pools = n_pools;
    c.n_reps = n_rep;
    c.rows.n_pools = n_pools;
    c.rows.chunk = row_chunk > 0 ? row_chunk : 1;
    c.rows.cb = cb_rows;
    i64 scratch = 1;
    for (i64 k = 0; k < n_pools; k++) {
        Pool *p = &c.pools[k];
        PyObject *t = PySequence_GetItem(pools_list, k);
        if (!t) goto done;
        int ok = PyArg_ParseTuple(t, "LLLLLiiidddddddLiiOOOOOO;pool settings", &p->max_seqs, &p->max_tokens,
                                  &p->bs, &p->total_blocks, &p->max_model_len, &p->chunked, &p->reserve_whole,
                                  &p->kind, &p->const_step_s, &p->const_per_token_s, &p->n_layers, &p->ovh_s,
                                  &p->per_seq_s, &p->eager_s, &p->scale, &p->cg_max, &p->overlap, &p->plain,
                                  &p->cb_dense, &p->cb_head, &p->cb_table, &p->cb_decode, &p->cb_prefill,
                                  &p->kern_spec);
        Py_DECREF(t); /* the callbacks stay alive in pools_list */
        if (!ok) goto done;
        if (p->kern_spec != Py_None && kern_get(&p->kern, p->kern_spec) < 0) goto done;
        if (p->max_seqs + 1 > scratch) scratch = p->max_seqs + 1;
        c.rows.last_row[k] = -1;
        for (int j = 0; j < 5; j++) c.rows.agg[5 * k + j] = agg_init[5 * k + j];
    }
    for (i64 k = 0; k < n_rep; k++) {
        Rep *r = &c.reps[k];
        r->pool = rep_pool[k];
        if (r->pool < 0 || r->pool >= n_pools) { PyErr_SetString(PyExc_ValueError, "replica pool"); goto done; }
        Pool *p = &c.pools[r->pool];
        r->free_blocks = p->total_blocks;
        size_t cap = (size_t)p->max_seqs + 1;
        r->run = malloc(cap * sizeof(i64));
        r->s_req = malloc(cap * sizeof(i64));
        r->s_n = malloc(cap * sizeof(i64));
        if (!r->run || !r->s_req || !r->s_n) { PyErr_NoMemory(); goto done; }
    }
    c.pre = malloc((size_t)scratch * sizeof(i64));
    c.adm = malloc((size_t)scratch * sizeof(i64));
    c.cc = malloc((size_t)scratch * sizeof(i64));
    c.cn = malloc((size_t)scratch * sizeof(i64));
    if (!c.pre || !c.adm || !c.cc || !c.cn) { PyErr_NoMemory(); goto done; }
    for (i64 k = 0; k < n_rep; k++) { c.steps_of[k] = 0; c.busy_of[k] = 0.0; c.step_end_of[k] = 0.0; }
    c.router = router;
    c.cb_rand = cb_rand;
    if (capsule != Py_None && !(c.bitgen = PyCapsule_GetPointer(capsule, "BitGenerator"))) goto done;
    c.longest_len = longest;
    c.shortest_len = shortest;
    if ((router == R_RANDOM || router == R_P2C) && !PyCallable_Check(cb_rand)) {
        PyErr_SetString(PyExc_ValueError, "compiled core: a random router needs its generator");
        goto done;
    }
    if (simulate(&c, arrival_in, prompt_in, output_in, n_req) < 0) goto done;
    result = Py_BuildValue("(idLLN)", c.done, c.end_s, c.n_order, c.events, rows_tuple(&c.rows));
done:
    core_free(&c);
    for (int k = 0; k < 9; k++)
        if (bufs[k].held) PyBuffer_Release(&bufs[k].b);
    return result;
}

/* draws(capsule, bounds) -> list: one lemire_below draw per bound (to check it against numpy's own) */
static PyObject *core_draws(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *capsule, *bounds;
    if (!PyArg_ParseTuple(args, "OO", &capsule, &bounds)) return NULL;
    BitGen *g = PyCapsule_GetPointer(capsule, "BitGenerator");
    if (!g) return NULL;
    PyObject *seq = PySequence_Fast(bounds, "bounds: not a sequence");
    if (!seq) return NULL;
    Py_ssize_t m = PySequence_Fast_GET_SIZE(seq);
    PyObject *out = PyList_New(m);
    for (Py_ssize_t i = 0; out && i < m; i++) {
        long long n = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(seq, i));
        if ((n == -1 && PyErr_Occurred()) || n < 1 || n >= (long long)UINT32_MAX) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "draws: a bound outside [1, 2**32 - 1)");
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, i, PyLong_FromLongLong(n == 1 ? 0 : (long long)lemire_below(g, (uint32_t)n)));
    }
    Py_DECREF(seq);
    return out;
}

/* libm(kind, src, dst): dst[i] = exp (kind 0), log2 (1), exp2 (2), cos (3) or log (4) of src[i], with the C
 * library's functions, as Python's math module computes them (sim/libm.py). */
static PyObject *core_libm(PyObject *self, PyObject *args) {
    (void)self;
    int kind;
    PyObject *src_o, *dst_o;
    if (!PyArg_ParseTuple(args, "iOO", &kind, &src_o, &dst_o)) return NULL;
    Buf src, dst;
    memset(&src, 0, sizeof src);
    memset(&dst, 0, sizeof dst);
    PyObject *result = NULL;
    double *x = buf_get(src_o, &src, 'd', -1, "values");
    double *y = x ? buf_get(dst_o, &dst, 'd', src.b.len / 8, "out values") : NULL;
    if (y) {
        i64 n = src.b.len / 8;
        if (kind == 0) for (i64 i = 0; i < n; i++) y[i] = exp(x[i]);
        else if (kind == 1) for (i64 i = 0; i < n; i++) y[i] = log2(x[i]);
        else if (kind == 2) for (i64 i = 0; i < n; i++) y[i] = exp2(x[i]);
        else if (kind == 3) for (i64 i = 0; i < n; i++) y[i] = cos(x[i]);
        else for (i64 i = 0; i < n; i++) y[i] = log(x[i]);
        result = Py_None;
        Py_INCREF(result);
    }
    if (src.held) PyBuffer_Release(&src.b);
    if (dst.held) PyBuffer_Release(&dst.b);
    return result;
}

static PyMethodDef methods[] = {
    {"libm", core_libm, METH_VARARGS, "Elementwise exp, log2, exp2, cos or log with the C library (see sim/libm.py)."},
    {"run", core_run, METH_VARARGS, "Run a static fleet over its arrivals (see sim/engine/core.py)."},
    {"draws", core_draws, METH_VARARGS, "Bounded integer draws from a numpy bit generator (see core.py)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_core", "The compiled engine core.", -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__core(void) { return PyModule_Create(&module); }
