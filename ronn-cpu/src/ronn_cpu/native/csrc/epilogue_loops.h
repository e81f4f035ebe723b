/* The epilogue loops for one real type: included by epilogue.c with REAL and SFX defined. */

/* dst = act(dst + shift[c] (+ res)) over rows [0, rows). */
static void SFX(bias_rows)(int kind, REAL *dst, const REAL *shift, const REAL *res, int has_res,
                           Py_ssize_t channels, Py_ssize_t inner, const REAL *params,
                           Py_ssize_t rows, int threads) {
    const REAL a = params[0], b = params[1];
    (void)a, (void)b;
#define BIAS_LOOPS(ACT)                                                                     \
    if (inner == 1) {                                                                       \
        _Pragma("omp parallel for num_threads(threads) if(threads > 1) schedule(static)")  \
        for (Py_ssize_t r = 0; r < rows; r++) {                                             \
            REAL *d = dst + r * channels;                                                   \
            if (has_res) {                                                                  \
                const REAL *q = res + r * channels;                                         \
                for (Py_ssize_t c = 0; c < channels; c++) {                                 \
                    REAL v = d[c] + shift[c] + q[c];                                        \
                    d[c] = ACT(v);                                                          \
                }                                                                           \
            } else {                                                                        \
                for (Py_ssize_t c = 0; c < channels; c++) {                                 \
                    REAL v = d[c] + shift[c];                                               \
                    d[c] = ACT(v);                                                          \
                }                                                                           \
            }                                                                               \
        }                                                                                   \
    } else {                                                                                \
        _Pragma("omp parallel for num_threads(threads) if(threads > 1) schedule(static)")  \
        for (Py_ssize_t r = 0; r < rows; r++) {                                             \
            const REAL t = shift[r % channels];                                             \
            REAL *d = dst + r * inner;                                                      \
            if (has_res) {                                                                  \
                const REAL *q = res + r * inner;                                            \
                for (Py_ssize_t i = 0; i < inner; i++) {                                    \
                    REAL v = d[i] + t + q[i];                                               \
                    d[i] = ACT(v);                                                          \
                }                                                                           \
            } else {                                                                        \
                for (Py_ssize_t i = 0; i < inner; i++) {                                    \
                    REAL v = d[i] + t;                                                      \
                    d[i] = ACT(v);                                                          \
                }                                                                           \
            }                                                                               \
        }                                                                                   \
    }
    ACTIVATION_SWITCH(BIAS_LOOPS)
#undef BIAS_LOOPS
}

/* dst = act(src * scale[c] + shift[c] (+ res)) over rows [0, rows); dst is not src. */
static void SFX(affine_rows)(int kind, const REAL *src, REAL *dst, const REAL *scale,
                             const REAL *shift, const REAL *res, int has_res, Py_ssize_t channels,
                             Py_ssize_t inner, const REAL *params, Py_ssize_t rows, int threads) {
    const REAL a = params[0], b = params[1];
    (void)a, (void)b;
#define AFFINE_LOOPS(ACT)                                                                   \
    if (inner == 1) {                                                                       \
        _Pragma("omp parallel for num_threads(threads) if(threads > 1) schedule(static)")  \
        for (Py_ssize_t r = 0; r < rows; r++) {                                             \
            const REAL *s = src + r * channels;                                             \
            REAL *d = dst + r * channels;                                                   \
            if (has_res) {                                                                  \
                const REAL *q = res + r * channels;                                         \
                for (Py_ssize_t c = 0; c < channels; c++) {                                 \
                    REAL v = s[c] * scale[c] + shift[c] + q[c];                             \
                    d[c] = ACT(v);                                                          \
                }                                                                           \
            } else {                                                                        \
                for (Py_ssize_t c = 0; c < channels; c++) {                                 \
                    REAL v = s[c] * scale[c] + shift[c];                                    \
                    d[c] = ACT(v);                                                          \
                }                                                                           \
            }                                                                               \
        }                                                                                   \
    } else {                                                                                \
        _Pragma("omp parallel for num_threads(threads) if(threads > 1) schedule(static)")  \
        for (Py_ssize_t r = 0; r < rows; r++) {                                             \
            const REAL m = scale[r % channels], t = shift[r % channels];                    \
            const REAL *s = src + r * inner;                                                \
            REAL *d = dst + r * inner;                                                      \
            if (has_res) {                                                                  \
                const REAL *q = res + r * inner;                                            \
                for (Py_ssize_t i = 0; i < inner; i++) {                                    \
                    REAL v = s[i] * m + t + q[i];                                           \
                    d[i] = ACT(v);                                                          \
                }                                                                           \
            } else {                                                                        \
                for (Py_ssize_t i = 0; i < inner; i++) {                                    \
                    REAL v = s[i] * m + t;                                                  \
                    d[i] = ACT(v);                                                          \
                }                                                                           \
            }                                                                               \
        }                                                                                   \
    }
    ACTIVATION_SWITCH(AFFINE_LOOPS)
#undef AFFINE_LOOPS
}

/* y = fn(x) (erf, tanh, gelu, gelu_tanh) over n elements, in double. */
static void SFX(unary)(int fn, const REAL *x, REAL *y, Py_ssize_t n, int threads) { UNARY_SWITCH }

/* out = a op b over n elements, the smaller operand repeating every m as mode says. */
static void SFX(binary)(int op, const REAL *a, const REAL *b, REAL *out, int mode, Py_ssize_t n, Py_ssize_t m) {
    (void)m;
    BINARY_SWITCH
}
