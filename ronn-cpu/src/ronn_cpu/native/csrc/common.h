/* What every native kernel module shares: argument handling and the module boilerplate.

   Calling convention (METH_FASTCALL): the same positional arguments as the numba kernel the
   function stands in for, optionally preceded by a thread count for the parallel variants.
   Arrays must be C-contiguous float32 or float64 (all of one dtype) exposing the buffer
   protocol; anything else (a strided view, another dtype, parameters a kernel does not
   cover) makes the function return NotImplemented, and the Python facade hands the call to
   the numba kernel. The GIL is released while a kernel runs. */
#ifndef RONN_NATIVE_COMMON_H
#define RONN_NATIVE_COMMON_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define MAX_VIEWS 12

typedef struct {
    Py_buffer views[MAX_VIEWS];
    int count;
    char kind; /* 'f' (float32) or 'd' (float64): the dtype of the first real array */
} Arrays;

/* 'f', 'd', or 0 for a buffer that is neither float32 nor float64. */
static inline char real_kind(const Py_buffer *view) {
    const char *format = view->format ? view->format : "B";
    size_t length = strlen(format);
    char last = length ? format[length - 1] : 0;
    if (length > 2 || (length == 2 && strchr("@=<", format[0]) == NULL)) return 0;
    if (last == 'f' && view->itemsize == 4) return 'f';
    if (last == 'd' && view->itemsize == 8) return 'd';
    return 0;
}

/* The C-contiguous buffer of obj (writable if asked), or NULL: declined (no error set). */
static inline Py_buffer *arrays_add(Arrays *arrays, PyObject *obj, int writable) {
    if (arrays->count >= MAX_VIEWS) return NULL;
    Py_buffer *view = &arrays->views[arrays->count];
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) != 0) {
        PyErr_Clear();
        return NULL;
    }
    arrays->count++;
    return view;
}

/* Like arrays_add, and the buffer must hold reals of the same dtype as the first one. */
static inline Py_buffer *arrays_real(Arrays *arrays, PyObject *obj, int writable) {
    Py_buffer *view = arrays_add(arrays, obj, writable);
    if (view == NULL) return NULL;
    char kind = real_kind(view);
    if (kind == 0 || (arrays->kind && arrays->kind != kind)) return NULL;
    arrays->kind = kind;
    return view;
}

static inline void arrays_release(Arrays *arrays) {
    for (int i = 0; i < arrays->count; i++) PyBuffer_Release(&arrays->views[i]);
    arrays->count = 0;
}

static inline Py_ssize_t min_ssize(Py_ssize_t a, Py_ssize_t b) { return a < b ? a : b; }
static inline Py_ssize_t max_ssize(Py_ssize_t a, Py_ssize_t b) { return a > b ? a : b; }

/* Whether two buffers share memory (an empty one shares none). */
static inline int views_overlap(const Py_buffer *a, const Py_buffer *b) {
    const char *a0 = a->buf, *b0 = b->buf;
    return a->len && b->len && a0 < b0 + b->len && b0 < a0 + a->len;
}

/* Element count of a buffer. */
static inline Py_ssize_t view_size(const Py_buffer *view) { return view->len / view->itemsize; }

/* Dimension i of a buffer (1 past its dimensions). */
static inline Py_ssize_t view_dim(const Py_buffer *view, int i) {
    return (view->shape && i < view->ndim) ? view->shape[i] : 1;
}

/* An integer argument (int, bool, numpy integer); -1 with an exception set on failure. */
static inline int arg_ssize(PyObject *obj, Py_ssize_t *out) {
    Py_ssize_t value = PyNumber_AsSsize_t(obj, PyExc_OverflowError);
    if (value == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        int truth = PyObject_IsTrue(obj); /* numpy.bool_ has no __index__ */
        if (truth < 0) return -1;
        value = truth;
    }
    *out = value;
    return 0;
}

/* count integer arguments args[0..count) into out; -1 with an exception set on failure. */
static inline int args_ssize(PyObject *const *args, int count, Py_ssize_t *out) {
    for (int i = 0; i < count; i++)
        if (arg_ssize(args[i], &out[i])) return -1;
    return 0;
}

/* A float argument (float, int, numpy scalar); -1 with an exception set on failure. */
static inline int arg_double(PyObject *obj, double *out) {
    double value = PyFloat_AsDouble(obj);
    if (value == -1.0 && PyErr_Occurred()) return -1;
    *out = value;
    return 0;
}

#define FASTCALL_ARGS PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs

#define CHECK_NARGS(name, expected)                                                        \
    if (nargs != (expected)) {                                                             \
        PyErr_Format(PyExc_TypeError, name "() takes %d arguments (%zd given)", (int)(expected), \
                     nargs);                                                               \
        return NULL;                                                                       \
    }

#define DECLINE(arrays)                  \
    do {                                 \
        arrays_release(arrays);          \
        Py_RETURN_NOTIMPLEMENTED;        \
    } while (0)

#define METHOD(name, doc) {#name, (PyCFunction)(void (*)(void))py_##name, METH_FASTCALL, doc}

#define DEFINE_MODULE(modname, methods, doc)                                               \
    static struct PyModuleDef modname##_def = {PyModuleDef_HEAD_INIT, #modname, doc, -1,   \
                                               methods, NULL, NULL, NULL, NULL};           \
    PyMODINIT_FUNC PyInit_##modname(void) { return PyModule_Create(&modname##_def); }

#endif
