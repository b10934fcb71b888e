/* ReduceMean / ReduceMax: mc_reduce_axis over one run of contiguous axes (x is [outer, len,
 * inner], y is [outer, inner]), mc_reduce_strided over axes that are not contiguous. */
#include "mirrorc_kernels.h"

static float mc_sum_contiguous(const float *xp, int len)
{
    /* eight partial sums: a vectorisable reduction without -ffast-math (as mc_global_avgpool) */
    float s[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f}, t;
    int j, k;
    for (j = 0; j + 8 <= len; j += 8)
        for (k = 0; k < 8; k++) s[k] += xp[j + k];
    t = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
    for (; j < len; j++) t += xp[j];
    return t;
}

void mc_reduce_axis(int kind, const float *x, float *y, int outer, int len, int inner)
{
    int o, j, i;
    for (o = 0; o < outer; o++) {
        const float *xo = x + (long)o * len * inner;
        float *yo = y + (long)o * inner;
        if (kind == MC_REDUCE_MEAN && inner == 1) {
            yo[0] = mc_sum_contiguous(xo, len) / (float)len;
            continue;
        }
        for (i = 0; i < inner; i++) yo[i] = xo[i];
        for (j = 1; j < len; j++) {
            const float *xj = xo + (long)j * inner;
            if (kind == MC_REDUCE_MAX)
                for (i = 0; i < inner; i++) yo[i] = xj[i] > yo[i] ? xj[i] : yo[i];
            else
                for (i = 0; i < inner; i++) yo[i] += xj[i];
        }
        if (kind == MC_REDUCE_MEAN)
            for (i = 0; i < inner; i++) yo[i] /= (float)len;
    }
}

void mc_reduce_strided(int kind, const float *x, float *y, int rank, const int *shape, const int *reduced)
{
    long stride[MC_MAX_RANK], count = 1, outputs = 1, o, r, base;
    int kept_dims[MC_MAX_RANK], red_dims[MC_MAX_RANK], idx[MC_MAX_RANK], nk = 0, nr = 0, d;
    for (d = rank - 1, base = 1; d >= 0; d--) { stride[d] = base; base *= shape[d]; }
    for (d = 0; d < rank; d++) {
        if (reduced[d]) { red_dims[nr++] = d; count *= shape[d]; }
        else { kept_dims[nk++] = d; outputs *= shape[d]; }
    }
    /* outputs in order (odometer over the kept dims), each a reduction over the reduced dims */
    for (o = 0; o < outputs; o++) {
        float acc = 0.0f;
        long rem = o;
        base = 0;
        for (d = nk - 1; d >= 0; d--) {
            base += (rem % shape[kept_dims[d]]) * stride[kept_dims[d]];
            rem /= shape[kept_dims[d]];
        }
        for (d = 0; d < nr; d++) idx[d] = 0;
        for (r = 0; r < count; r++) {
            long off = base;
            float v;
            for (d = 0; d < nr; d++) off += idx[d] * stride[red_dims[d]];
            v = x[off];
            if (r == 0) acc = v;
            else if (kind == MC_REDUCE_MAX) acc = v > acc ? v : acc;
            else acc += v;
            for (d = nr - 1; d >= 0; d--) { /* next reduced index, last dim fastest */
                if (++idx[d] < shape[red_dims[d]]) break;
                idx[d] = 0;
            }
        }
        y[o] = kind == MC_REDUCE_MAX ? acc : acc / (float)count;
    }
}
