/* Fused per-channel epilogues (the C twin of ronn_cpu/jit/epilogue.py's bias_* and affine_*).

   bias(kind, threads, dst, shift, res, has_res, channels, inner, params):
       dst = act(dst + shift[c] (+ res)) in place;
   affine(kind, threads, src, dst, scale, shift, res, has_res, channels, inner, params):
       dst = act(src * scale[c] + shift[c] (+ res)), dst distinct from src.
   Flat C-contiguous arrays seen as (outer, C, inner); inner == 1 is the (rows, C) layout of a
   2-D output. params: alpha, beta, 0, 1, 1/6, 1/2 in the arrays' dtype. kind numbers follow
   the numba module's KINDS.

   unary(fn, threads, x, y): y = erf / tanh / gelu / gelu_tanh (fn 0-3) of x, by the rational
       fits of jit/epilogue.py evaluated in double; flat arrays of one size.
   binary(op, a, b, out, mode): out = a + - * / b (op 0-3) over flat arrays, the smaller operand
       repeating as mode says (SAME, B_ROWS, B_SCALAR, A_ROWS, A_SCALAR).
   Each returns None, or NotImplemented for arguments it does not take. */
#include "common.h"

enum { NONE, RELU, LEAKY_RELU, CLIP, SIGMOID, HARD_SIGMOID, HARD_SWISH, TANH, GELU, GELU_TANH, KIND_COUNT };

static const double ERF_P[9] = {
    1.1283791671409666, 0.09373204366442975, 0.041048583126128135, -0.0001094202135044496,
    0.00016709394537444176, -1.336497787482716e-05, 3.4571404501083223e-07,
    3.998579646256268e-09, 4.325513985899536e-12};
static const double ERF_Q[8] = {
    1.0, 0.416401198799072, 0.07517871325184577, 0.007132165279040129, 0.000292000310144235,
    -7.665989971801989e-06, -1.2765576932325986e-06, 7.54926671872271e-08};
static const double TANH_P[6] = {0.999999956254161, 0.12932287331317302, 0.002934506848215025,
                                 9.385471189516e-06, -1.31019459136128e-08, 1.8987894589983512e-11};
static const double TANH_Q[4] = {1.0, 0.4626558693821354, 0.023820283001855652, 0.00022995284403742053};
#define SQRT_HALF 0.7071067811865476
#define TANH_SCALE 0.7978845608028654

/* erf by ronn's rational fit (NaN stays NaN), as jit/epilogue.py's erf_value. */
static inline double erf_fit(double v) {
    double c = v > 4.0 ? 4.0 : (v < -4.0 ? -4.0 : v);
    double t = c * c;
    double num = ERF_P[8];
    for (int k = 7; k >= 0; k--) num = num * t + ERF_P[k];
    double den = ERF_Q[7];
    for (int k = 6; k >= 0; k--) den = den * t + ERF_Q[k];
    double r = c * num / den;
    return v >= 4.0 ? 1.0 : (v <= -4.0 ? -1.0 : r);
}

/* tanh by ronn's rational fit (NaN stays NaN), as jit/epilogue.py's tanh_value. */
static inline double tanh_fit(double v) {
    double c = v > 9.0 ? 9.0 : (v < -9.0 ? -9.0 : v);
    double t = c * c;
    double num = TANH_P[5];
    for (int k = 4; k >= 0; k--) num = num * t + TANH_P[k];
    double den = TANH_Q[3];
    for (int k = 2; k >= 0; k--) den = den * t + TANH_Q[k];
    double r = c * num / den;
    return v >= 9.0 ? 1.0 : (v <= -9.0 ? -1.0 : r);
}

#define ZERO ((REAL)0)
#define ONE ((REAL)1)
#define CLAMP01(g) ((g) < ZERO ? ZERO : ((g) > ONE ? ONE : (g)))
#define ACT_NONE(v) (v)
#define ACT_RELU(v) ((v) < ZERO ? ZERO : (v))
#define ACT_LEAKY_RELU(v) ((v) < ZERO ? (v) * a : (v))
#define ACT_CLIP(v) ((v) < a ? a : ((v) > b ? b : (v)))
#define ACT_SIGMOID(v) (ONE / (ONE + EXP(-(v))))
#define ACT_HARD_SIGMOID(v) CLAMP01((v) * a + b)
#define ACT_HARD_SWISH(v) ((v) * CLAMP01((v) * ((REAL)1 / (REAL)6) + (REAL)0.5))
#define ACT_TANH(v) ((REAL)tanh_fit((double)(v)))
#define ACT_GELU(v) ((REAL)(0.5 * (double)(v) * (1.0 + erf_fit((double)(v) * SQRT_HALF))))
#define ACT_GELU_TANH(v) \
    ((REAL)(0.5 * (double)(v) * (1.0 + tanh_fit(TANH_SCALE * ((double)(v) + 0.044715 * (double)(v) * (double)(v) * (double)(v))))))

#define ACTIVATION_SWITCH(LOOPS)                     \
    switch (kind) {                                  \
        case RELU: LOOPS(ACT_RELU) break;            \
        case LEAKY_RELU: LOOPS(ACT_LEAKY_RELU) break; \
        case CLIP: LOOPS(ACT_CLIP) break;            \
        case SIGMOID: LOOPS(ACT_SIGMOID) break;      \
        case HARD_SIGMOID: LOOPS(ACT_HARD_SIGMOID) break; \
        case HARD_SWISH: LOOPS(ACT_HARD_SWISH) break; \
        case TANH: LOOPS(ACT_TANH) break;            \
        case GELU: LOOPS(ACT_GELU) break;            \
        case GELU_TANH: LOOPS(ACT_GELU_TANH) break;  \
        default: LOOPS(ACT_NONE) break;              \
    }

#define UNARY_LOOP(EXPR)                                                                    \
    _Pragma("omp parallel for num_threads(threads) if(threads > 1) schedule(static)")      \
    for (Py_ssize_t i = 0; i < n; i++) {                                                    \
        double v = (double)x[i];                                                            \
        y[i] = (REAL)(EXPR);                                                                \
    }
#define UNARY_SWITCH                                                                        \
    switch (fn) {                                                                           \
        case 0: UNARY_LOOP(erf_fit(v)) break;                                               \
        case 1: UNARY_LOOP(tanh_fit(v)) break;                                              \
        case 2: UNARY_LOOP(0.5 * v * (1.0 + erf_fit(v * SQRT_HALF))) break;                  \
        default: UNARY_LOOP(0.5 * v * (1.0 + tanh_fit(TANH_SCALE * (v + 0.044715 * v * v * v)))) break; \
    }
enum { SAME, B_ROWS, B_SCALAR, A_ROWS, A_SCALAR };
#define BINARY_LOOPS(OP)                                                                    \
    switch (mode) {                                                                         \
        case SAME: for (Py_ssize_t i = 0; i < n; i++) out[i] = a[i] OP b[i]; break;         \
        case B_SCALAR: { const REAL v = b[0]; for (Py_ssize_t i = 0; i < n; i++) out[i] = a[i] OP v; break; } \
        case A_SCALAR: { const REAL v = a[0]; for (Py_ssize_t i = 0; i < n; i++) out[i] = v OP b[i]; break; } \
        case B_ROWS:                                                                        \
            for (Py_ssize_t r = 0; r < n; r += m)                                           \
                for (Py_ssize_t j = 0; j < m; j++) out[r + j] = a[r + j] OP b[j];           \
            break;                                                                          \
        default:                                                                            \
            for (Py_ssize_t r = 0; r < n; r += m)                                           \
                for (Py_ssize_t j = 0; j < m; j++) out[r + j] = a[j] OP b[r + j];           \
            break;                                                                          \
    }
#define BINARY_SWITCH                     \
    switch (op) {                         \
        case 0: BINARY_LOOPS(+) break;    \
        case 1: BINARY_LOOPS(-) break;    \
        case 2: BINARY_LOOPS(*) break;    \
        default: BINARY_LOOPS(/) break;   \
    }

#define REAL float
#define EXP expf
#define SFX(name) name##_f32
#include "epilogue_loops.h"
#undef REAL
#undef EXP
#undef SFX
#define REAL double
#define EXP exp
#define SFX(name) name##_f64
#include "epilogue_loops.h"
#undef REAL
#undef EXP
#undef SFX

static PyObject *py_unary(FASTCALL_ARGS) {
    CHECK_NARGS("unary", 4);
    Py_ssize_t fn, threads;
    if (arg_ssize(args[0], &fn) || arg_ssize(args[1], &threads)) return NULL;
    Arrays arrays = {.count = 0, .kind = 0};
    Py_buffer *xv = arrays_real(&arrays, args[2], 0);
    Py_buffer *yv = xv ? arrays_real(&arrays, args[3], 1) : NULL;
    if (yv == NULL || fn < 0 || fn > 3 || view_size(xv) != view_size(yv)) DECLINE(&arrays);
    const Py_ssize_t n = view_size(xv);
    const int nt = threads > 1 ? (int)threads : 1;
    Py_BEGIN_ALLOW_THREADS
    if (arrays.kind == 'f')
        unary_f32((int)fn, xv->buf, yv->buf, n, nt);
    else
        unary_f64((int)fn, xv->buf, yv->buf, n, nt);
    Py_END_ALLOW_THREADS
    arrays_release(&arrays);
    Py_RETURN_NONE;
}

static PyObject *py_binary(FASTCALL_ARGS) {
    CHECK_NARGS("binary", 5);
    Py_ssize_t op, mode;
    if (arg_ssize(args[0], &op) || arg_ssize(args[4], &mode)) return NULL;
    Arrays arrays = {.count = 0, .kind = 0};
    Py_buffer *av = arrays_real(&arrays, args[1], 0);
    Py_buffer *bv = av ? arrays_real(&arrays, args[2], 0) : NULL;
    Py_buffer *ov = bv ? arrays_real(&arrays, args[3], 1) : NULL;
    if (ov == NULL || op < 0 || op > 3 || mode < SAME || mode > A_SCALAR) DECLINE(&arrays);
    const Py_ssize_t n = view_size(ov), na = view_size(av), nb = view_size(bv);
    Py_ssize_t m = mode == B_ROWS ? nb : (mode == A_ROWS ? na : 1);
    int fits = mode == SAME       ? na >= n && nb >= n
               : mode == B_SCALAR ? na >= n && nb >= 1
               : mode == A_SCALAR ? nb >= n && na >= 1
               : mode == B_ROWS   ? na >= n && m > 0 && n % m == 0
                                  : nb >= n && m > 0 && n % m == 0;
    if (!fits) DECLINE(&arrays);
    Py_BEGIN_ALLOW_THREADS
    if (arrays.kind == 'f')
        binary_f32((int)op, av->buf, bv->buf, ov->buf, (int)mode, n, m);
    else
        binary_f64((int)op, av->buf, bv->buf, ov->buf, (int)mode, n, m);
    Py_END_ALLOW_THREADS
    arrays_release(&arrays);
    Py_RETURN_NONE;
}

/* rows of a flat tensor of size elements seen as (outer, C, inner); -1 if inconsistent */
static Py_ssize_t rows_of(Py_ssize_t size, Py_ssize_t channels, Py_ssize_t inner) {
    Py_ssize_t width = inner == 1 ? channels : inner;
    if (channels <= 0 || inner <= 0 || size % width) return -1;
    return size / width;
}

static PyObject *py_bias(FASTCALL_ARGS) {
    CHECK_NARGS("bias", 9);
    Py_ssize_t kind, threads, has_res, channels, inner;
    if (arg_ssize(args[0], &kind) || arg_ssize(args[1], &threads) || arg_ssize(args[5], &has_res) ||
        arg_ssize(args[6], &channels) || arg_ssize(args[7], &inner))
        return NULL;
    Arrays arrays = {.count = 0, .kind = 0};
    Py_buffer *dst = arrays_real(&arrays, args[2], 1);
    Py_buffer *shift = dst ? arrays_real(&arrays, args[3], 0) : NULL;
    Py_buffer *res = shift ? arrays_real(&arrays, args[4], 0) : NULL;
    Py_buffer *params = res ? arrays_real(&arrays, args[8], 0) : NULL;
    if (params == NULL || kind < 0 || kind >= KIND_COUNT) DECLINE(&arrays);
    Py_ssize_t size = view_size(dst), rows = rows_of(size, channels, inner);
    if (rows < 0 || view_size(shift) < channels || view_size(params) < 6 || (has_res && view_size(res) < size))
        DECLINE(&arrays);
    int nt = threads > 1 ? (int)threads : 1;
    Py_BEGIN_ALLOW_THREADS
    if (arrays.kind == 'f')
        bias_rows_f32((int)kind, dst->buf, shift->buf, res->buf, (int)has_res, channels, inner, params->buf, rows, nt);
    else
        bias_rows_f64((int)kind, dst->buf, shift->buf, res->buf, (int)has_res, channels, inner, params->buf, rows, nt);
    Py_END_ALLOW_THREADS
    arrays_release(&arrays);
    Py_RETURN_NONE;
}

static PyObject *py_affine(FASTCALL_ARGS) {
    CHECK_NARGS("affine", 11);
    Py_ssize_t kind, threads, has_res, channels, inner;
    if (arg_ssize(args[0], &kind) || arg_ssize(args[1], &threads) || arg_ssize(args[7], &has_res) ||
        arg_ssize(args[8], &channels) || arg_ssize(args[9], &inner))
        return NULL;
    Arrays arrays = {.count = 0, .kind = 0};
    Py_buffer *src = arrays_real(&arrays, args[2], 0);
    Py_buffer *dst = src ? arrays_real(&arrays, args[3], 1) : NULL;
    Py_buffer *scale = dst ? arrays_real(&arrays, args[4], 0) : NULL;
    Py_buffer *shift = scale ? arrays_real(&arrays, args[5], 0) : NULL;
    Py_buffer *res = shift ? arrays_real(&arrays, args[6], 0) : NULL;
    Py_buffer *params = res ? arrays_real(&arrays, args[10], 0) : NULL;
    if (params == NULL || kind < 0 || kind >= KIND_COUNT) DECLINE(&arrays);
    Py_ssize_t size = view_size(src), rows = rows_of(size, channels, inner);
    if (rows < 0 || view_size(dst) != size || view_size(scale) < channels || view_size(shift) < channels ||
        view_size(params) < 6 || (has_res && view_size(res) < size))
        DECLINE(&arrays);
    int nt = threads > 1 ? (int)threads : 1;
    Py_BEGIN_ALLOW_THREADS
    if (arrays.kind == 'f')
        affine_rows_f32((int)kind, src->buf, dst->buf, scale->buf, shift->buf, res->buf, (int)has_res, channels,
                        inner, params->buf, rows, nt);
    else
        affine_rows_f64((int)kind, src->buf, dst->buf, scale->buf, shift->buf, res->buf, (int)has_res, channels,
                        inner, params->buf, rows, nt);
    Py_END_ALLOW_THREADS
    arrays_release(&arrays);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    METHOD(bias, "bias(kind, threads, dst, shift, res, has_res, channels, inner, params)"),
    METHOD(affine, "affine(kind, threads, src, dst, scale, shift, res, has_res, channels, inner, params)"),
    METHOD(unary, "unary(fn, threads, x, y): erf, tanh, gelu, gelu_tanh (fn 0-3)"),
    METHOD(binary, "binary(op, a, b, out, mode): add, sub, mul, div (op 0-3)"),
    {NULL, NULL, 0, NULL},
};

DEFINE_MODULE(ronn_native_epilogue, methods, "Fused per-channel epilogues.")
