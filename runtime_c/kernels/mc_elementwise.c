/* Activations, broadcasting binary ops, data movement and ArgMax. */
#include "mirrorc_kernels.h"

void mc_relu(const float *x, float *y, int n)
{
    int i;
    for (i = 0; i < n; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void mc_leaky_relu(const float *x, float *y, int n, float alpha)
{
    int i;
    for (i = 0; i < n; i++) y[i] = x[i] >= 0.0f ? x[i] : alpha * x[i];
}

void mc_clip(const float *x, float *y, int n, float lo, float hi)
{
    int i;
    for (i = 0; i < n; i++) {
        float v = x[i] < lo ? lo : x[i];
        y[i] = v > hi ? hi : v;
    }
}

void mc_sigmoid(const float *x, float *y, int n)
{
    int i;
    for (i = 0; i < n; i++) {
        /* never exponentiate a large positive number */
        if (x[i] >= 0.0f) y[i] = 1.0f / (1.0f + mc_expf(-x[i]));
        else { float e = mc_expf(x[i]); y[i] = e / (1.0f + e); }
    }
}

void mc_tanh(const float *x, float *y, int n)
{
    int i;
    for (i = 0; i < n; i++) y[i] = mc_tanhf(x[i]);
}

void mc_elu(const float *x, float *y, int n, float alpha)
{
    int i;
    for (i = 0; i < n; i++) y[i] = x[i] >= 0.0f ? x[i] : alpha * (mc_expf(x[i]) - 1.0f);
}

static float mc_apply(int op, float a, float b)
{
    switch (op) {
    case MC_ADD: return a + b;
    case MC_SUB: return a - b;
    case MC_MUL: return a * b;
    case MC_DIV: return a / b;
    case MC_PRELU: return a >= 0.0f ? a : a * b;
    case MC_MAX: return a > b ? a : b;
    default: return a < b ? a : b;
    }
}

/* one row of a binary op; contiguous and scalar-operand rows get branch-free loops per op.
 * No restrict: y may be a (in-place steps of the memory plan). */
#define MC_ROW(EXPR)                                                                    \
    switch (op) {                                                                       \
    case MC_ADD: for (i = 0; i < n; i++) { float A = (AV), B = (BV); y[i] = A + B; } break; \
    case MC_SUB: for (i = 0; i < n; i++) { float A = (AV), B = (BV); y[i] = A - B; } break; \
    case MC_MUL: for (i = 0; i < n; i++) { float A = (AV), B = (BV); y[i] = A * B; } break; \
    case MC_DIV: for (i = 0; i < n; i++) { float A = (AV), B = (BV); y[i] = A / B; } break; \
    default: for (i = 0; i < n; i++) y[i] = EXPR;                                       \
    }

static void mc_binary_row(int op, const float *a, long sa, const float *b, long sb, float *y, int n)
{
    int i;
    if (sa == 1 && sb == 1) {
#define AV a[i]
#define BV b[i]
        MC_ROW(mc_apply(op, a[i], b[i]))
#undef AV
#undef BV
    } else if (sa == 1 && sb == 0) {
        const float bs = b[0];
#define AV a[i]
#define BV bs
        MC_ROW(mc_apply(op, a[i], bs))
#undef AV
#undef BV
    } else if (sa == 0 && sb == 1) {
        const float as = a[0];
#define AV as
#define BV b[i]
        MC_ROW(mc_apply(op, as, b[i]))
#undef AV
#undef BV
    } else {
        for (i = 0; i < n; i++) y[i] = mc_apply(op, a[i * sa], b[i * sb]);
    }
}

void mc_binary(int op, const float *a, const float *b, float *y, int n)
{
    mc_binary_row(op, a, 1, b, 1, y, n);
}

void mc_binary_bcast(int op, const float *a, const float *b, float *y, int rank, const int *shape,
                     const int *sa, const int *sb)
{
    int idx[MC_MAX_RANK] = {0};
    long ia = 0, ib = 0, total = 1, t;
    int d, inner;
    if (rank == 0) { y[0] = mc_apply(op, a[0], b[0]); return; }
    for (d = 0; d < rank; d++) total *= shape[d];
    inner = shape[rank - 1];
    for (t = 0; t < total; t += inner) {
        mc_binary_row(op, a + ia, sa[rank - 1], b + ib, sb[rank - 1], y + t, inner);
        /* odometer over the outer dims */
        for (d = rank - 2; d >= 0; d--) {
            idx[d]++;
            ia += sa[d];
            ib += sb[d];
            if (idx[d] < shape[d]) break;
            ia -= (long)sa[d] * shape[d];
            ib -= (long)sb[d] * shape[d];
            idx[d] = 0;
        }
    }
}

void mc_copy(const float *x, float *y, int n)
{
    int i;
    for (i = 0; i < n; i++) y[i] = x[i];
}

void mc_concat_part(const float *x, float *y, int outer, int inner_x, int inner_y, int offset)
{
    int o;
    for (o = 0; o < outer; o++)
        mc_copy(x + (long)o * inner_x, y + (long)o * inner_y + offset, inner_x);
}

void mc_transpose(const float *x, float *y, int rank, const int *in_shape, const int *perm)
{
    int idx[MC_MAX_RANK] = {0}, out_shape[MC_MAX_RANK];
    long in_stride[MC_MAX_RANK], stride[MC_MAX_RANK], total = 1, t, ix = 0;
    int d;
    for (d = rank - 1; d >= 0; d--) { in_stride[d] = total; total *= in_shape[d]; }
    /* walk y in order; stride[d] = input step for output dim d */
    for (d = 0; d < rank; d++) { out_shape[d] = in_shape[perm[d]]; stride[d] = in_stride[perm[d]]; }
    for (t = 0; t < total; t++) {
        y[t] = x[ix];
        for (d = rank - 1; d >= 0; d--) {
            idx[d]++;
            ix += stride[d];
            if (idx[d] < out_shape[d]) break;
            ix -= stride[d] * out_shape[d];
            idx[d] = 0;
        }
    }
}

int32_t mc_argmax(const float *x, int n)
{
    int i, best = 0;
    for (i = 1; i < n; i++) if (x[i] > x[best]) best = i;
    return best;
}

void mc_argmax_axis(const float *x, int32_t *y, int outer, int len, int inner, int select_last)
{
    int o, i, j;
    for (o = 0; o < outer; o++)
        for (i = 0; i < inner; i++) {
            const float *xp = x + (long)o * len * inner + i;
            int best = 0;
            for (j = 1; j < len; j++) {
                float v = xp[(long)j * inner], b = xp[(long)best * inner];
                if (v > b || (select_last && v == b)) best = j;
            }
            y[(long)o * inner + i] = best;
        }
}
