/* Convolution and matrix products. Inner loops run over contiguous outputs without branches so the
 * compiler vectorises them (-O2 -ftree-vectorize / -O3); the valid output range of each kernel tap
 * is computed up front instead of testing padding per element. */
#include "mirrorc_kernels.h"

static int mc_ceil_div(int a, int b) { return (a + b - 1) / b; }

void mc_conv2d(const float *x, const float *w, const float *bias, float *y,
               int n, int c, int h, int wd, int m, int oh, int ow,
               int kh, int kw, int sh, int sw, int pt, int pl, int dh, int dw, int groups)
{
    int cg = c / groups, mg = m / groups, plane = oh * ow;
    int b, o, ic, ky, kx, oy, ox, i;
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
                    for (kx = 0; kx < kw; kx++) {
                        float wv = wk[ky * kw + kx];
                        int off = kx * dw - pl;         /* input column of output column 0 */
                        int lo = off < 0 ? mc_ceil_div(-off, sw) : 0;
                        int hi = wd - 1 - off < 0 ? 0 : (wd - 1 - off) / sw + 1;
                        if (hi > ow) hi = ow;
                        if (lo >= hi) continue;
                        for (oy = 0; oy < oh; oy++) {
                            int iy = oy * sh + ky * dh - pt;
                            const float *xr;
                            float *yr;
                            if (iy < 0 || iy >= h) continue;
                            xr = xc + (long)iy * wd;
                            yr = yo + (long)oy * ow;
                            if (sw == 1) {
                                for (ox = lo; ox < hi; ox++) yr[ox] += wv * xr[ox + off];
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
