/* The per-sample work of one block, in C: the output guard and the sample-format
 * conversion.
 *
 * Why C: in numpy each step of the guard (min, max, sum, DC ramp, gain ramp, limiter)
 * is a separate pass with ~1-4 µs of fixed cost, and right after onnxruntime has run a
 * block numpy's code is cold in the caches. That fixed cost was 20-30 µs per block, a
 * tenth of a small model's own time. Here one call makes two passes over the block.
 *
 * The semantics are those of the numpy reference in safety.py / backends/base.py
 * (NumpyGuardKernel, Converter._convert_numpy); tests/test_kernels.py holds the two to
 * each other. No numpy headers: arrays arrive through the buffer protocol, so the module
 * builds wherever pyalsaaudio builds (gcc + python3-dev).
 *
 * Real-time rules: no allocation (the DC state is allocated once, in __init__), no
 * locks; the GIL is held (a block is a few microseconds).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define RUNAWAY 1000.0  /* after the output gain (+60 dBFS): a model this far off has blown up; keep in step with safety.RUNAWAY */
#define LANES 8  /* independent accumulators: a float SIMD register on x86 (AVX) or two on ARM */

/* The DC tracker's move for one block: a one-pole step towards the block's mean, or the
 * whole way when the mean is more than full scale off (an offset that big is a broken model,
 * not audio: removed in a block, not bent by the limiter at full scale for a second). Keep in
 * step with safety.py's DC_SNAP. */
#define DC_SNAP 1.0
static inline double dc_step(double coef, double diff) {
    return (coef > 0.0 && fabs(diff) > DC_SNAP) ? diff : coef * diff;
}

typedef struct {
    PyObject_HEAD
    int block;
    int channels;
    double limit;      /* soft limiter threshold, linear */
    double gain_lin;   /* output gain, linear */
    double gain_step;  /* gain change per block (fades) */
    double dc_coef;    /* one-pole coefficient per block */
    double gain;       /* fade gain now, 0..1 */
    double target;     /* fade target: 0 or 1 */
    double peak;       /* the last block's peak after DC and gain, before the limiter */
    long long nonfinite_blocks;
    long long limited_blocks;
    double *dc;        /* DC estimate per channel */
} GuardKernel;

static void GuardKernel_dealloc(GuardKernel *self) {
    PyMem_Free(self->dc);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int GuardKernel_init(GuardKernel *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"block", "channels", NULL};
    int block, channels;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "ii", kwlist, &block, &channels))
        return -1;
    if (block < 1 || channels < 1) {
        PyErr_SetString(PyExc_ValueError, "block and channels must be at least 1");
        return -1;
    }
    double *dc = PyMem_Calloc((size_t)channels, sizeof(double));
    if (!dc) {
        PyErr_NoMemory();
        return -1;
    }
    PyMem_Free(self->dc);
    self->dc = dc;
    self->block = block;
    self->channels = channels;
    self->limit = 1.0;
    self->gain_lin = 1.0;
    self->gain_step = 1.0;
    self->dc_coef = 0.0;
    self->gain = 1.0;
    self->target = 1.0;
    self->peak = 0.0;
    self->nonfinite_blocks = 0;
    self->limited_blocks = 0;
    return 0;
}

/* A writable, C-contiguous float32 buffer of exactly block*channels items. */
static int get_block(GuardKernel *self, PyObject *obj, Py_buffer *view) {
    if (PyObject_GetBuffer(obj, view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return -1;
    if (view->itemsize != 4 || !view->format || strcmp(view->format, "f") != 0
        || view->len != (Py_ssize_t)self->block * self->channels * 4) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_ValueError, "the guard takes float32 [%d, %d] C-contiguous blocks",
                     self->block, self->channels);
        return -1;
    }
    return 0;
}

static PyObject *GuardKernel_process(GuardKernel *self, PyObject *obj) {
    Py_buffer view;
    if (get_block(self, obj, &view) < 0)
        return NULL;
    float *x = (float *)view.buf;
    const int B = self->block, C = self->channels;
    const Py_ssize_t N = (Py_ssize_t)B * C;
    double *dc = self->dc;
    double sums[8];
    double *sum = C <= 8 ? sums : NULL;
    double sum1 = 0.0;

    /* pass 1: finite? and, for mono, the sum for the DC estimate. LANES independent
     * accumulators, so the compiler can use SIMD: one serial chain of adds was most of
     * the guard's time (4 cycles a sample, against ~0.5 here) */
    int bad = 0;
    {
        /* a NaN or an inf makes the sum NaN or inf; a runaway sample (past RUNAWAY once the
         * output gain applies) shows in the largest magnitude (which a NaN, failing the
         * compare, never enters) */
        float acc[LANES] = {0}, big[LANES] = {0};
        Py_ssize_t i = 0;
        for (; i + LANES <= N; i += LANES)
            for (int j = 0; j < LANES; j++) {
                const float v = x[i + j], a = fabsf(v);
                acc[j] += v;
                big[j] = a > big[j] ? a : big[j];
            }
        for (; i < N; i++) {
            const float v = x[i], a = fabsf(v);
            acc[0] += v;
            big[0] = a > big[0] ? a : big[0];
        }
        float most = 0.0f;
        for (int j = 0; j < LANES; j++) {
            sum1 += acc[j];
            most = big[j] > most ? big[j] : most;
        }
        bad = !(fabs(sum1) < HUGE_VAL) || !((double)most * self->gain_lin < RUNAWAY);
    }
    if (bad) {
        memset(x, 0, (size_t)N * sizeof(float));
        self->gain = 0.0;
        self->nonfinite_blocks++;
        PyBuffer_Release(&view);
        Py_RETURN_FALSE;
    }

    /* gain ramp across the block (fades, mute recovery), times the output gain */
    double g0 = self->gain, g1 = g0;
    if (g0 < self->target)
        g1 = fmin(self->target, g0 + self->gain_step);
    else if (g0 > self->target)
        g1 = fmax(self->target, g0 - self->gain_step);
    self->gain = g1;
    const double ga = g0 * self->gain_lin, gd = (g1 - g0) * self->gain_lin;
    const double inv_b = 1.0 / B;
    float peak = 0.0f;

    /* pass 2: DC ramp (old estimate to new across the block, so the correction never
     * steps), gain ramp, and the peak */
    if (C == 1) {
        const double dc0 = dc[0];
        const double delta = dc_step(self->dc_coef, sum1 / B - dc0);
        dc[0] = dc0 + delta;
        /* in float, as the numpy reference, and LANES peaks at a time (SIMD) */
        const float fdc0 = (float)dc0, fdelta = (float)delta, fga = (float)ga, fgd = (float)gd;
        const float finv = (float)inv_b;
        float peaks[LANES] = {0};
        Py_ssize_t i = 0;
        for (; i + LANES <= B; i += LANES) {
            /* lanes through a pointer and a float ramp: Python builds with -fwrapv, and
             * int index arithmetic that may wrap keeps the compiler from using SIMD */
            float *p = x + i;
            const float i1 = (float)(i + 1);
            for (int j = 0; j < LANES; j++) {
                const float lin = (i1 + (float)j) * finv;
                const float v = (p[j] - (fdc0 + lin * fdelta)) * (fga + lin * fgd);
                p[j] = v;
                const float a = fabsf(v);
                peaks[j] = a > peaks[j] ? a : peaks[j];
            }
        }
        for (; i < B; i++) {
            const float lin = (float)(i + 1) * finv;
            const float v = (x[i] - (fdc0 + lin * fdelta)) * (fga + lin * fgd);
            x[i] = v;
            const float a = fabsf(v);
            peaks[0] = a > peaks[0] ? a : peaks[0];
        }
        for (int j = 0; j < LANES; j++)
            peak = peaks[j] > peak ? peaks[j] : peak;
    } else {
        double delta_s[8], dc0_s[8];
        double *delta = C <= 8 ? delta_s : NULL, *dc0 = C <= 8 ? dc0_s : NULL;
        if (!sum) {  /* more than 8 channels: rare enough to allocate (not on a Pi DAC) */
            sum = PyMem_Calloc((size_t)C * 3, sizeof(double));
            if (!sum) {
                PyBuffer_Release(&view);
                return PyErr_NoMemory();
            }
            delta = sum + C;
            dc0 = sum + 2 * C;
        } else {
            memset(sum, 0, (size_t)C * sizeof(double));
        }
        for (int i = 0; i < B; i++)
            for (int c = 0; c < C; c++)
                sum[c] += x[(Py_ssize_t)i * C + c];
        for (int c = 0; c < C; c++) {
            dc0[c] = dc[c];
            delta[c] = dc_step(self->dc_coef, sum[c] / B - dc0[c]);
            dc[c] = dc0[c] + delta[c];
        }
        for (int i = 0; i < B; i++) {
            const double lin = (i + 1) * inv_b, g = ga + lin * gd;
            for (int c = 0; c < C; c++) {
                float *p = x + (Py_ssize_t)i * C + c;
                float v = (float)((*p - (dc0[c] + lin * delta[c])) * g);
                *p = v;
                float a = fabsf(v);
                if (a > peak) peak = a;
            }
        }
        if (sum != sums)
            PyMem_Free(sum);
    }
    self->peak = peak;

    /* pass 3, only for a block over the threshold: the excess is squashed by tanh into
     * the headroom (peaks bend instead of clipping), then a hard clip to ±1 */
    const float t = (float)self->limit;
    if (peak > t) {
        self->limited_blocks++;
        const float head = 1.0f - t;
        for (Py_ssize_t i = 0; i < N; i++) {
            float v = x[i], a = fabsf(v);
            if (a > t) {
                float m = head > 0.0f ? t + head * tanhf((a - t) / head) : t;
                v = v < 0.0f ? -m : m;
                x[i] = v > 1.0f ? 1.0f : (v < -1.0f ? -1.0f : v);
            }
        }
    }
    PyBuffer_Release(&view);
    Py_RETURN_TRUE;
}

static PyObject *GuardKernel_get_dc(GuardKernel *self, void *closure) {
    PyObject *t = PyTuple_New(self->channels);
    if (!t) return NULL;
    for (int c = 0; c < self->channels; c++) {
        PyObject *f = PyFloat_FromDouble(self->dc ? self->dc[c] : 0.0);
        if (!f) { Py_DECREF(t); return NULL; }
        PyTuple_SET_ITEM(t, c, f);
    }
    return t;
}

static PyMethodDef GuardKernel_methods[] = {
    {"process", (PyCFunction)GuardKernel_process, METH_O,
     "process(x) -> bool: make block x [block, channels] float32 safe, in place.\n"
     "False if it was not finite (silenced; the caller resets the model)."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef GuardKernel_members[] = {
    {"block", T_INT, offsetof(GuardKernel, block), READONLY, NULL},
    {"channels", T_INT, offsetof(GuardKernel, channels), READONLY, NULL},
    {"limit", T_DOUBLE, offsetof(GuardKernel, limit), 0, NULL},
    {"gain_lin", T_DOUBLE, offsetof(GuardKernel, gain_lin), 0, NULL},
    {"gain_step", T_DOUBLE, offsetof(GuardKernel, gain_step), 0, NULL},
    {"dc_coef", T_DOUBLE, offsetof(GuardKernel, dc_coef), 0, NULL},
    {"gain", T_DOUBLE, offsetof(GuardKernel, gain), 0, NULL},
    {"target", T_DOUBLE, offsetof(GuardKernel, target), 0, NULL},
    {"peak", T_DOUBLE, offsetof(GuardKernel, peak), 0, NULL},
    {"nonfinite_blocks", T_LONGLONG, offsetof(GuardKernel, nonfinite_blocks), 0, NULL},
    {"limited_blocks", T_LONGLONG, offsetof(GuardKernel, limited_blocks), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef GuardKernel_getset[] = {
    {"dc", (getter)GuardKernel_get_dc, NULL, "the DC estimate per channel", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject GuardKernelType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pi_synth.audio._kernels.GuardKernel",
    .tp_basicsize = sizeof(GuardKernel),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "The output guard's state and its per-block work (see safety.OutputGuard).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)GuardKernel_init,
    .tp_dealloc = (destructor)GuardKernel_dealloc,
    .tp_methods = GuardKernel_methods,
    .tp_members = GuardKernel_members,
    .tp_getset = GuardKernel_getset,
};

/* One sample to int16: scaled, saturated, NaN to 0, rounded half to even. The rounding
 * is the 1.5 * 2^23 trick (exact for |v| < 2^22 in the default rounding mode, as lrintf),
 * and the clamps are branch-free selects (-fno-trapping-math), so a loop of these
 * vectorizes; lrintf does not. */
static inline int16_t s16(float v) {
    v *= 32767.0f;
    v = v == v ? v : 0.0f;
    v = v > 32767.0f ? 32767.0f : v;
    v = v < -32767.0f ? -32767.0f : v;
    v = (v + 12582912.0f) - 12582912.0f;
    return (int16_t)(int32_t)v;
}

/* to_pcm(x, out): float32 frames [n, cx] -> out [>= n, co] (int16, int32 or float32),
 * scaled to full scale, rounded half to even (as numpy's rint), saturated (a crossfade
 * of two loud models may sum past 1.0; wrapping round would be a full-scale click).
 * cx == 1 duplicates mono onto every output channel. Returns n. */
#define X_FLAGS (PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_ND)
#define OUT_FLAGS (PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_ND)

/* The conversion itself, on two buffers already exported: n, or -1 with an exception. */
static Py_ssize_t convert(const Py_buffer *xv_, const Py_buffer *ov_) {
    const Py_buffer xv = *xv_, ov = *ov_;
    if (xv.itemsize != 4 || strcmp(xv.format, "f") != 0 || xv.ndim != 2 || ov.ndim != 2) {
        PyErr_SetString(PyExc_ValueError, "to_pcm: x must be float32 [n, channels], out 2-D");
        return -1;
    }
    const Py_ssize_t n = xv.shape[0], cx = xv.shape[1], co = ov.shape[1];
    if (n > ov.shape[0] || !(cx == co || cx == 1)) {
        PyErr_SetString(PyExc_ValueError, "to_pcm: out is too short or has other channels");
        return -1;
    }
    const float *x = (const float *)xv.buf;
    const char f = ov.format[0] == '<' || ov.format[0] == '=' ? ov.format[1] : ov.format[0];
    /* clamp, then round with lrint (one instruction: cvtss2si / fcvtns; ties to even in
     * the default rounding mode, as numpy's rint); clamping to an integer first gives the
     * same result as rounding first. NaN (never past the guard) becomes 0. */
    if (ov.itemsize == 2 && (f == 'h') && cx == co) {  /* the usual case: a flat loop */
        int16_t *restrict o = (int16_t *)ov.buf;
        const Py_ssize_t m = n * co;
        Py_ssize_t i = 0;
        for (; i + LANES <= m; i += LANES)  /* LANES at a time: SIMD at -O2 */
            for (int j = 0; j < LANES; j++)
                o[i + j] = s16(x[i + j]);
        for (; i < m; i++)
            o[i] = s16(x[i]);
    } else if (ov.itemsize == 2 && (f == 'h')) {
        int16_t *o = (int16_t *)ov.buf;
        for (Py_ssize_t i = 0; i < n; i++) {
            for (Py_ssize_t c = 0; c < co; c++) {
                float v = x[i * cx + (cx == 1 ? 0 : c)] * 32767.0f;
                v = v > 32767.0f ? 32767.0f : (v < -32767.0f ? -32767.0f : (v == v ? v : 0.0f));
                o[i * co + c] = (int16_t)lrintf(v);
            }
        }
    } else if (ov.itemsize == 4 && (f == 'i' || f == 'l')) {
        int32_t *o = (int32_t *)ov.buf;
        for (Py_ssize_t i = 0; i < n; i++) {
            for (Py_ssize_t c = 0; c < co; c++) {
                double v = (double)x[i * cx + (cx == 1 ? 0 : c)] * 2147483647.0;
                v = v > 2147483647.0 ? 2147483647.0 : (v < -2147483647.0 ? -2147483647.0 : (v == v ? v : 0.0));
                o[i * co + c] = (int32_t)lrint(v);
            }
        }
    } else if (ov.itemsize == 4 && f == 'f') {
        float *o = (float *)ov.buf;
        for (Py_ssize_t i = 0; i < n; i++) {
            for (Py_ssize_t c = 0; c < co; c++) {
                float v = x[i * cx + (cx == 1 ? 0 : c)];
                o[i * co + c] = v > 1.0f ? 1.0f : (v < -1.0f ? -1.0f : v);
            }
        }
    } else {
        PyErr_Format(PyExc_ValueError, "to_pcm: out must be int16, int32 or float32, not %s", ov.format);
        return -1;
    }
    return n;
}

static PyObject *to_pcm(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "to_pcm(x, out) takes two arrays");
        return NULL;
    }
    Py_buffer xv, ov;
    if (PyObject_GetBuffer(args[0], &xv, X_FLAGS) < 0)
        return NULL;
    if (PyObject_GetBuffer(args[1], &ov, OUT_FLAGS) < 0) {
        PyBuffer_Release(&xv);
        return NULL;
    }
    const Py_ssize_t n = convert(&xv, &ov);
    PyBuffer_Release(&xv);
    PyBuffer_Release(&ov);
    return n < 0 ? NULL : PyLong_FromSsize_t(n);
}

/* Sink: the audio thread's two calls to a device, each one C call into the device's own
 * (C) methods in the common case, and the backend's Python for everything else.
 *
 * Why: a Python frame costs ~0.5 µs right after a model run has left the interpreter
 * cold in the caches, and the plain path made five a block (write, convert, the write
 * hook, wait_room, its hook): ~2-3 µs of a 75-210 µs block.
 *
 *   Sink(write, avail, out, rest, wait)
 *   sink.write(x)    x -> out (as to_pcm), then write(out). If that took all of out,
 *                    done; anything else (an exception, a short or a refused write, an x
 *                    of another shape) goes to rest(x, r) with r the result or the
 *                    exception, and rest finishes the job (re-converting x if need be).
 *   sink.wait(n)     avail() >= n (or an error: the write after reports it): done; else
 *                    wait(n), the backend's poll loop.
 *
 * The view of the last x is kept (the engine hands over the same block buffer every
 * time), so a numpy export is paid only when the buffer changes (a crossfade). */
typedef struct {
    PyObject_HEAD
    PyObject *write, *avail, *out, *rest, *wait;
    Py_buffer ov;
    int has_ov;
    PyObject *x;       /* the last input (a reference held), and its view */
    Py_buffer xv;
    long long written; /* frames written by the fast path */
} Sink;

static void Sink_drop_x(Sink *self) {
    if (self->x) {
        PyBuffer_Release(&self->xv);
        Py_CLEAR(self->x);
    }
}

/* rest and wait are the backend's bound methods, and the backend holds its sink: a
 * cycle, so the collector must see these references */
static int Sink_traverse(Sink *self, visitproc visit, void *arg) {
    Py_VISIT(self->write);
    Py_VISIT(self->avail);
    Py_VISIT(self->rest);
    Py_VISIT(self->wait);
    Py_VISIT(self->x);
    return 0;
}

static int Sink_clear(Sink *self) {
    Sink_drop_x(self);
    Py_CLEAR(self->write);
    Py_CLEAR(self->avail);
    Py_CLEAR(self->rest);
    Py_CLEAR(self->wait);
    return 0;
}

static void Sink_dealloc(Sink *self) {
    PyObject_GC_UnTrack(self);
    Sink_clear(self);
    if (self->has_ov)
        PyBuffer_Release(&self->ov);
    Py_XDECREF(self->out);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Sink_init(Sink *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"write", "avail", "out", "rest", "wait", NULL};
    PyObject *write, *avail, *out, *rest, *wait;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOO", kwlist, &write, &avail, &out, &rest, &wait))
        return -1;
    if (self->has_ov) {
        PyErr_SetString(PyExc_RuntimeError, "a Sink is made once");
        return -1;
    }
    if (PyObject_GetBuffer(out, &self->ov, OUT_FLAGS) < 0)
        return -1;
    self->has_ov = 1;
    if (self->ov.ndim != 2) {
        PyErr_SetString(PyExc_ValueError, "Sink: out must be 2-D [frames, channels]");
        return -1;
    }
    Py_INCREF(write); self->write = write;
    Py_INCREF(avail); self->avail = avail;
    Py_INCREF(out); self->out = out;
    Py_INCREF(rest); self->rest = rest;
    Py_INCREF(wait); self->wait = wait;
    return 0;
}

static PyObject *Sink_rest(Sink *self, PyObject *x, PyObject *r) {
    return PyObject_CallFunctionObjArgs(self->rest, x, r, NULL);
}

static int Sink_closed(Sink *self) {
    if (self->write && self->avail && self->rest && self->wait)
        return 0;
    PyErr_SetString(PyExc_RuntimeError, "this sink has been cleared");
    return 1;
}

static PyObject *Sink_write(Sink *self, PyObject *x) {
    if (Sink_closed(self))
        return NULL;
    if (x != self->x) {
        Sink_drop_x(self);
        if (PyObject_GetBuffer(x, &self->xv, X_FLAGS) < 0) {
            PyErr_Clear();  /* not a plain float32 block: the backend's general path */
            return Sink_rest(self, x, Py_None);
        }
        Py_INCREF(x);
        self->x = x;
    }
    const Py_ssize_t frames = self->ov.shape[0];
    if (self->xv.ndim != 2 || self->xv.shape[0] != frames || convert(&self->xv, &self->ov) != frames) {
        PyErr_Clear();
        return Sink_rest(self, x, Py_None);
    }
    PyObject *r = PyObject_CallOneArg(self->write, self->out);
    if (!r) {  /* the device's exception: the backend says what it means */
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        PyObject *res = Sink_rest(self, x, value ? value : Py_None);
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
        return res;
    }
    const long done = PyLong_Check(r) ? PyLong_AsLong(r) : -1;
    if (done == frames) {
        Py_DECREF(r);
        self->written += frames;
        Py_RETURN_NONE;
    }
    PyErr_Clear();
    PyObject *res = Sink_rest(self, x, r);
    Py_DECREF(r);
    return res;
}

static PyObject *Sink_wait(Sink *self, PyObject *n) {
    if (Sink_closed(self))
        return NULL;
    const long want = PyLong_AsLong(n);
    if (want == -1 && PyErr_Occurred())
        return NULL;
    PyObject *r = PyObject_CallNoArgs(self->avail);
    if (!r) {  /* an xrun or a lost device: the write that follows reports it */
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    const long avail = PyLong_AsLong(r);
    Py_DECREF(r);
    if (avail == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    if (avail >= want || avail < 0)
        Py_RETURN_NONE;
    return PyObject_CallOneArg(self->wait, n);
}

static PyMethodDef Sink_methods[] = {
    {"write", (PyCFunction)Sink_write, METH_O,
     "write(x): convert block x and write it; anything but a whole write goes to rest(x, r)"},
    {"wait", (PyCFunction)Sink_wait, METH_O,
     "wait(n): return once n frames fit (avail), else the backend's wait(n)"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Sink_members[] = {
    {"written", T_LONGLONG, offsetof(Sink, written), READONLY, "frames written by the fast path"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject SinkType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pi_synth.audio._kernels.Sink",
    .tp_basicsize = sizeof(Sink),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)Sink_traverse,
    .tp_clear = (inquiry)Sink_clear,
    .tp_doc = "The audio thread's write and wait, in C when the device takes a whole block.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Sink_init,
    .tp_dealloc = (destructor)Sink_dealloc,
    .tp_methods = Sink_methods,
    .tp_members = Sink_members,
};

static PyMethodDef module_methods[] = {
    {"to_pcm", (PyCFunction)(void (*)(void))to_pcm, METH_FASTCALL,
     "to_pcm(x, out) -> n: float32 frames to the device's format, rounded and saturated"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef kernels_module = {
    PyModuleDef_HEAD_INIT, "_kernels",
    "The audio thread's per-sample work in C (see safety.py and backends/base.py).",
    -1, module_methods,
};

PyMODINIT_FUNC PyInit__kernels(void) {
    if (PyType_Ready(&GuardKernelType) < 0 || PyType_Ready(&SinkType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&kernels_module);
    if (!m)
        return NULL;
    Py_INCREF(&GuardKernelType);
    if (PyModule_AddObject(m, "GuardKernel", (PyObject *)&GuardKernelType) < 0) {
        Py_DECREF(&GuardKernelType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&SinkType);
    if (PyModule_AddObject(m, "Sink", (PyObject *)&SinkType) < 0) {
        Py_DECREF(&SinkType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
