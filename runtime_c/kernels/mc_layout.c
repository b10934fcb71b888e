/* Data movement (registry part B): Split parts, strided Slice, Pad and 2-D Resize. Index
 * arithmetic only; every table and size is fixed by the compiler. */
#include "mirrorc_kernels.h"

void mc_split_part(const float *x, float *y, int outer, int inner_y, int inner_x, int offset)
{
    int o, i;
    for (o = 0; o < outer; o++) {
        const float *src = x + (long)o * inner_x + offset;
        float *dst = y + (long)o * inner_y;
        for (i = 0; i < inner_y; i++) dst[i] = src[i];
    }
}

void mc_slice(const float *x, float *y, int rank, const int *in_shape, const int *starts,
              const int *steps, const int *out_shape)
{
    int idx[MC_MAX_RANK] = {0};
    long in_stride[MC_MAX_RANK], step[MC_MAX_RANK], total = 1, size = 1, t, ix = 0;
    int d;
    for (d = rank - 1; d >= 0; d--) { in_stride[d] = size; size *= in_shape[d]; }
    for (d = 0; d < rank; d++) {
        step[d] = (long)steps[d] * in_stride[d];
        ix += (long)starts[d] * in_stride[d];
        total *= out_shape[d];
    }
    /* walk y in order, moving the input offset by step[d] (steps may be negative) */
    for (t = 0; t < total; t++) {
        y[t] = x[ix];
        for (d = rank - 1; d >= 0; d--) {
            idx[d]++;
            ix += step[d];
            if (idx[d] < out_shape[d]) break;
            ix -= step[d] * out_shape[d];
            idx[d] = 0;
        }
    }
}

/* the input index read for output index o along a dim of n, or -1 for the constant */
static int pad_source(int o, int begin, int n, int mode)
{
    int i = o - begin;
    if (i >= 0 && i < n) return i;
    if (mode == MC_PAD_EDGE) return i < 0 ? 0 : n - 1;
    if (mode == MC_PAD_REFLECT) {
        int period = 2 * (n - 1);
        if (period == 0) return 0;
        i %= period;
        if (i < 0) i += period;
        return i < n ? i : period - i;
    }
    return -1;
}

void mc_pad(const float *x, float *y, int rank, const int *in_shape, const int *begins,
            const int *out_shape, int mode, float value)
{
    int idx[MC_MAX_RANK] = {0};
    long in_stride[MC_MAX_RANK], size = 1, total = 1, t;
    int d;
    for (d = rank - 1; d >= 0; d--) { in_stride[d] = size; size *= in_shape[d]; }
    for (d = 0; d < rank; d++) total *= out_shape[d];
    for (t = 0; t < total; t++) {
        long ix = 0;
        int inside = 1;
        for (d = 0; d < rank; d++) {
            int i = pad_source(idx[d], begins[d], in_shape[d], mode);
            if (i < 0) { inside = 0; break; }
            ix += (long)i * in_stride[d];
        }
        y[t] = inside ? x[ix] : value;
        for (d = rank - 1; d >= 0; d--) {
            if (++idx[d] < out_shape[d]) break;
            idx[d] = 0;
        }
    }
}

void mc_resize2d(const float *x, float *y, int nc, int h, int w, int oh, int ow, const int *y0,
                 const int *y1, const float *wy, const int *x0, const int *x1, const float *wx)
{
    int p, i, j;
    for (p = 0; p < nc; p++) {
        const float *xp = x + (long)p * h * w;
        float *yp = y + (long)p * oh * ow;
        for (i = 0; i < oh; i++) {
            const float *r0 = xp + (long)y0[i] * w, *r1 = xp + (long)y1[i] * w;
            for (j = 0; j < ow; j++) {
                float top = r0[x0[j]] + wx[j] * (r0[x1[j]] - r0[x0[j]]);
                float bottom = r1[x0[j]] + wx[j] * (r1[x1[j]] - r1[x0[j]]);
                yp[(long)i * ow + j] = top + wy[i] * (bottom - top);
            }
        }
    }
}
