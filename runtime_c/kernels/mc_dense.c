/* Convolution and matrix products. Inner loops run over contiguous outputs without branches so the
 * compiler vectorises them (-O2 -ftree-vectorize / -O3); the valid output range of each kernel tap
 * is computed up front instead of testing padding per element. */
#include "mirrorc_kernels.h"

static int mc_ceil_div(int a, int b) { return (a + b - 1) / b; }

/* yr[i] += sum_k wk[k] * xr[i + k] for i in [0, n): one output row, all kernel columns at once
 * (stride 1, no dilation). Fixed widths are unrolled so the loop vectorises over i. */
static void mc_conv_row_s1(float *restrict yr, const float *restrict xr, const float *wk, int kw, int n)
{
    int i, k;
    switch (kw) {
    case 1: {
        float w0 = wk[0];
        for (i = 0; i < n; i++) yr[i] += w0 * xr[i];
        break;
    }
    case 3: {
        float w0 = wk[0], w1 = wk[1], w2 = wk[2];
        for (i = 0; i < n; i++) yr[i] += w0 * xr[i] + w1 * xr[i + 1] + w2 * xr[i + 2];
        break;
    }
    case 5: {
        float w0 = wk[0], w1 = wk[1], w2 = wk[2], w3 = wk[3], w4 = wk[4];
        for (i = 0; i < n; i++)
            yr[i] += w0 * xr[i] + w1 * xr[i + 1] + w2 * xr[i + 2] + w3 * xr[i + 3] + w4 * xr[i + 4];
        break;
    }
    default:
        for (k = 0; k < kw; k++) {
            float w = wk[k];
            for (i = 0; i < n; i++) yr[i] += w * xr[i + k];
        }
    }
}

void mc_conv2d(const float *x, const float *w, const float *bias, float *y,
               int n, int c, int h, int wd, int m, int oh, int ow,
               int kh, int kw, int sh, int sw, int pt, int pl, int dh, int dw, int groups)
{
    int cg = c / groups, mg = m / groups, plane = oh * ow;
    int b, o, ic, ky, kx, oy, ox, i;
    /* stride-1 rows: outputs [in0, in1) see every kernel column inside the input */
    int in0 = pl < ow ? pl : ow;
    int in1 = wd - kw + 1 + pl < ow ? wd - kw + 1 + pl : ow;
    if (in1 < in0) in1 = in0;
    if (kh == 1 && kw == 1 && sh == 1 && sw == 1 && pt == 0 && pl == 0 && oh == h && ow == wd) {
        /* pointwise: each output plane is a weighted sum of whole input planes */
        for (b = 0; b < n; b++)
            for (o = 0; o < m; o++) {
                int g = o / mg;
                float *restrict yo = y + ((long)b * m + o) * plane;
                float bv = bias ? bias[o] : 0.0f;
                const float *restrict x0 = x + ((long)b * c + (long)g * cg) * plane;
                const float *wo = w + (long)o * cg;
                if (cg == 1) { /* the narrow CPM cases (1-4 inputs) in one pass */
                    for (i = 0; i < plane; i++) yo[i] = bv + wo[0] * x0[i];
                    continue;
                }
                if (cg == 2) {
                    const float *restrict x1 = x0 + plane;
                    for (i = 0; i < plane; i++) yo[i] = bv + wo[0] * x0[i] + wo[1] * x1[i];
                    continue;
                }
                if (cg == 3) {
                    const float *restrict x1 = x0 + plane, *restrict x2 = x1 + plane;
                    for (i = 0; i < plane; i++) yo[i] = bv + wo[0] * x0[i] + wo[1] * x1[i] + wo[2] * x2[i];
                    continue;
                }
                if (cg == 4) {
                    const float *restrict x1 = x0 + plane, *restrict x2 = x1 + plane, *restrict x3 = x2 + plane;
                    for (i = 0; i < plane; i++)
                        yo[i] = bv + wo[0] * x0[i] + wo[1] * x1[i] + wo[2] * x2[i] + wo[3] * x3[i];
                    continue;
                }
                for (i = 0; i < plane; i++) yo[i] = bv;
                for (ic = 0; ic < cg; ic++) {
                    const float *restrict xc = x + ((long)b * c + (long)g * cg + ic) * plane;
                    float wv = w[(long)o * cg + ic];
                    for (i = 0; i < plane; i++) yo[i] += wv * xc[i];
                }
            }
        return;
    }
    for (b = 0; b < n; b++) {
        for (o = 0; o < m; o++) {
            int g = o / mg;
            float *yo = y + ((long)b * m + o) * plane;
            float bv = bias ? bias[o] : 0.0f;
            for (i = 0; i < plane; i++) yo[i] = bv;
            for (ic = 0; ic < cg; ic++) {
                const float *xc = x + ((long)b * c + (long)g * cg + ic) * h * wd;
                const float *wk = w + ((long)o * cg + ic) * kh * kw;
                for (ky = 0; ky < kh; ky++) {
                    for (oy = 0; oy < oh; oy++) {
                        int iy = oy * sh + ky * dh - pt;
                        const float *restrict xr;
                        float *restrict yr;
                        if (iy < 0 || iy >= h) continue;
                        xr = xc + (long)iy * wd;
                        yr = yo + (long)oy * ow;
                        if (sw == 1 && dw == 1 && in1 > in0)
                            mc_conv_row_s1(yr + in0, xr + (in0 - pl), wk + ky * kw, kw, in1 - in0);
                        for (kx = 0; kx < kw; kx++) {
                            float wv = wk[ky * kw + kx];
                            int off = kx * dw - pl;         /* input column of output column 0 */
                            int lo = off < 0 ? mc_ceil_div(-off, sw) : 0;
                            int hi = wd - 1 - off < 0 ? 0 : (wd - 1 - off) / sw + 1;
                            if (hi > ow) hi = ow;
                            if (sw == 1 && dw == 1) {
                                /* only the border columns the row kernel left out */
                                int a = hi < in0 ? hi : in0, e = lo > in1 ? lo : in1;
                                for (ox = lo; ox < a; ox++) yr[ox] += wv * xr[ox + off];
                                for (ox = e; ox < hi; ox++) yr[ox] += wv * xr[ox + off];
                            } else {
                                for (ox = lo; ox < hi; ox++) yr[ox] += wv * xr[ox * sw + off];
                            }
                        }
                    }
                }
            }
        }
    }
}

void mc_conv2d_s1(const float *x, const float *w, const float *bias, float *y, float *scratch,
                  int n, int c, int h, int wd, int m, int oh, int ow, int kh, int kw, int pt, int pl,
                  int groups)
{
    int hp = oh + kh - 1, wp = ow + kw - 1;
    long plane = (long)hp * wp + kw;    /* slack: the last shifted read runs kw-1 past the plane */
    long span = (long)oh * wp;          /* output rows computed at the padded width */
    float *xp = scratch, *acc = scratch + (long)c * plane;
    int cg = c / groups, mg = m / groups;
    int b, ch, o, ic, ky, iy, ix, oy;
    long p;
    for (b = 0; b < n; b++) {
        /* zero-padded copy of every input plane */
        for (ch = 0; ch < c; ch++) {
            float *d = xp + (long)ch * plane;
            const float *s = x + ((long)b * c + ch) * h * wd;
            for (p = 0; p < plane; p++) d[p] = 0.0f;
            for (iy = 0; iy < h && iy + pt < hp; iy++)
                for (ix = 0; ix < wd && ix + pl < wp; ix++) d[(long)(iy + pt) * wp + ix + pl] = s[(long)iy * wd + ix];
        }
        for (o = 0; o < m; o++) {
            int g = o / mg;
            float bv = bias ? bias[o] : 0.0f;
            float *yo = y + ((long)b * m + o) * oh * ow;
            for (p = 0; p < span; p++) acc[p] = bv;
            /* each kernel row is one long contiguous pass over the whole plane */
            for (ic = 0; ic < cg; ic++) {
                const float *xc = xp + (long)(g * cg + ic) * plane;
                const float *wk = w + ((long)o * cg + ic) * kh * kw;
                for (ky = 0; ky < kh; ky++)
                    mc_conv_row_s1(acc, xc + (long)ky * wp, wk + ky * kw, kw, (int)span);
            }
            for (oy = 0; oy < oh; oy++)
                for (ix = 0; ix < ow; ix++) yo[(long)oy * ow + ix] = acc[(long)oy * wp + ix];
        }
    }
}

void mc_gemm(const float *a, const float *b, const float *c, float *y, int m, int k, int n,
             int trans_a, int trans_b, float alpha, float beta, int c_rows, int c_cols)
{
    /* element (i, p) of A' and (p, j) of B' through strides, so transposes cost nothing */
    long a_is = trans_a ? 1 : k, a_ps = trans_a ? m : 1;
    long c_is = c_rows == 1 ? 0 : c_cols, c_js = c_cols == 1 ? 0 : 1;
    int i, j, p;
    for (i = 0; i < m; i++) {
        float *yr = y + (long)i * n;
        if (trans_b) {
            /* B is [n, k]: dot products over contiguous rows, four partial sums */
            for (j = 0; j < n; j++) {
                const float *br = b + (long)j * k;
                float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
                if (!trans_a) {
                    const float *ar = a + (long)i * k;
                    for (p = 0; p + 3 < k; p += 4) {
                        s0 += ar[p] * br[p];
                        s1 += ar[p + 1] * br[p + 1];
                        s2 += ar[p + 2] * br[p + 2];
                        s3 += ar[p + 3] * br[p + 3];
                    }
                    for (; p < k; p++) s0 += ar[p] * br[p];
                } else {
                    for (p = 0; p < k; p++) s0 += a[i * a_is + p * a_ps] * br[p];
                }
                yr[j] = alpha * ((s0 + s1) + (s2 + s3));
            }
        } else {
            /* B is [k, n]: accumulate rows of B, contiguous in j */
            for (j = 0; j < n; j++) yr[j] = 0.0f;
            for (p = 0; p < k; p++) {
                float av = a[i * a_is + p * a_ps];
                const float *br = b + (long)p * n;
                for (j = 0; j < n; j++) yr[j] += av * br[j];
            }
            if (alpha != 1.0f) for (j = 0; j < n; j++) yr[j] *= alpha;
        }
        if (c && beta != 0.0f) {
            for (j = 0; j < n; j++) yr[j] += beta * c[i * c_is + j * c_js];
        }
    }
}

void mc_matmul(const float *a, const float *b, float *y, int batch, int m, int k, int n,
               int a_stride, int b_stride)
{
    int t;
    for (t = 0; t < batch; t++)
        mc_gemm(a + (long)t * a_stride, b + (long)t * b_stride, 0, y + (long)t * m * n, m, k, n,
                0, 0, 1.0f, 0.0f, 1, 1);
}
