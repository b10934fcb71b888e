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

/* The mean of a plane from its sixteen partial sums s and the scalar tail's sum r (a fixed order:
 * the fused paths and the plain reduction give the same bits). */
static float mc_mean16(float *s, float r, long plane)
{
    int j;
    for (j = 0; j < 8; j++) s[j] += s[j + 8];
    return (((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7])) + r) / (float)plane;
}

/* What follows the conv in the graph, applied to one finished output plane yo: ReLU, and with
 * MC_EPI_GAP the plane's mean goes to *gap instead (yo is then scratch, left as it is). */
static void mc_epilogue(float *restrict yo, long plane, int epi, float *gap)
{
    long i;
    int j;
    if (epi & MC_EPI_GAP) {
        /* sixteen partial sums: a vectorisable reduction without -ffast-math, two vectors deep
         * so it is not bound by the add latency; ReLU on the fly (a separate in-place pass costs
         * a fifth more on SqueezeNet's head) */
        float s[16] = {0.0f}, r = 0.0f;
        long tail = plane - plane % 16;
        if (epi & MC_EPI_RELU) { /* branch-free max: a branch on the sign would mispredict */
            for (i = 0; i < tail; i += 16)
                for (j = 0; j < 16; j++) s[j] += yo[i + j] > 0.0f ? yo[i + j] : 0.0f;
            for (; i < plane; i++) r += yo[i] > 0.0f ? yo[i] : 0.0f;
        } else {
            for (i = 0; i < tail; i += 16)
                for (j = 0; j < 16; j++) s[j] += yo[i + j];
            for (; i < plane; i++) r += yo[i];
        }
        *gap = mc_mean16(s, r, plane);
    } else if (epi & MC_EPI_RELU) {
        for (i = 0; i < plane; i++) yo[i] = yo[i] > 0.0f ? yo[i] : 0.0f;
    }
}

/* yo[i] = bv + sum_ic wo[ic] * x[ic * plane + i] (a 1x1 stride-1 conv is a GEMM): one pass per
 * four input channels, so the output is loaded and stored once per four multiply-adds (the first
 * pass starts from the bias). */
static void mc_pointwise_plane(const float *x, const float *wo, float bv, float *restrict yo, int cg,
                               long plane)
{
    long i;
    int ic;
    for (ic = 0; ic < cg; ic += 4) {
        const float *restrict x0 = x + (long)ic * plane, *restrict x1, *restrict x2, *restrict x3;
        const float *wc = wo + ic;
        float b0 = ic == 0 ? bv : 0.0f;
        switch (cg - ic < 4 ? cg - ic : 4) {
        case 1:
            if (ic == 0) for (i = 0; i < plane; i++) yo[i] = b0 + wc[0] * x0[i];
            else for (i = 0; i < plane; i++) yo[i] += wc[0] * x0[i];
            break;
        case 2:
            x1 = x0 + plane;
            if (ic == 0) for (i = 0; i < plane; i++) yo[i] = b0 + wc[0] * x0[i] + wc[1] * x1[i];
            else for (i = 0; i < plane; i++) yo[i] += wc[0] * x0[i] + wc[1] * x1[i];
            break;
        case 3:
            x1 = x0 + plane; x2 = x1 + plane;
            if (ic == 0) for (i = 0; i < plane; i++) yo[i] = b0 + wc[0] * x0[i] + wc[1] * x1[i] + wc[2] * x2[i];
            else for (i = 0; i < plane; i++) yo[i] += wc[0] * x0[i] + wc[1] * x1[i] + wc[2] * x2[i];
            break;
        default:
            x1 = x0 + plane; x2 = x1 + plane; x3 = x2 + plane;
            if (ic == 0)
                for (i = 0; i < plane; i++) yo[i] = b0 + wc[0] * x0[i] + wc[1] * x1[i] + wc[2] * x2[i] + wc[3] * x3[i];
            else
                for (i = 0; i < plane; i++) yo[i] += wc[0] * x0[i] + wc[1] * x1[i] + wc[2] * x2[i] + wc[3] * x3[i];
        }
    }
}

/* mean of relu(bv + sum_ic wo[ic] * x[ic * plane + i]) over the plane, for cg <= 4: a pointwise conv
 * with fused ReLU and global average pool as one pass that stores nothing (SqueezeNet's head: 1000
 * output planes, each reduced to one float; a third faster than a plane pass plus a reduction).
 * Same summation order as mc_pointwise_plane; sixteen partial sums as in mc_epilogue. */
#define MC_PW1(k) (bv + w0 * x0[k])
#define MC_PW2(k) (MC_PW1(k) + w1 * x1[k])
#define MC_PW3(k) (MC_PW2(k) + w2 * x2[k])
#define MC_PW4(k) (MC_PW3(k) + w3 * x3[k])
#define MC_RELU_SUM(V)                                                                             \
    for (i = 0; i < tail; i += 16)                                                                 \
        for (j = 0; j < 16; j++) { float v = V(i + j); s[j] += v > 0.0f ? v : 0.0f; }              \
    for (; i < plane; i++) { float v = V(i); r += v > 0.0f ? v : 0.0f; }
static float mc_pointwise_relu_gap(const float *x, const float *wo, float bv, int cg, long plane)
{
    const float *restrict x0 = x, *restrict x1 = cg > 1 ? x0 + plane : x0;
    const float *restrict x2 = cg > 2 ? x1 + plane : x1, *restrict x3 = cg > 3 ? x2 + plane : x2;
    float w0 = wo[0], w1 = cg > 1 ? wo[1] : 0.0f, w2 = cg > 2 ? wo[2] : 0.0f, w3 = cg > 3 ? wo[3] : 0.0f;
    float s[16] = {0.0f}, r = 0.0f;
    long i, tail = plane - plane % 16;
    int j;
    switch (cg) {
    case 1: MC_RELU_SUM(MC_PW1) break;
    case 2: MC_RELU_SUM(MC_PW2) break;
    case 3: MC_RELU_SUM(MC_PW3) break;
    default: MC_RELU_SUM(MC_PW4) break;
    }
    return mc_mean16(s, r, plane);
}
#undef MC_RELU_SUM
#undef MC_PW4
#undef MC_PW3
#undef MC_PW2
#undef MC_PW1

/* acc[i] += sum_{ky, kx} wk[ky * kw + kx] * x[ky * wp + kx + i] for i in [0, n): one input channel
 * of a stride-1 conv over the padded frame. 3x3 and 5x5 are one pass with every tap unrolled
 * (one load and store of acc per kh * kw multiply-adds); other sizes take a pass per kernel row. */
static void mc_conv_taps_s1(float *restrict acc, const float *restrict x, const float *wk, int kh, int kw,
                            long wp, long n)
{
    long i;
    int ky;
    if (kh == 3 && kw == 3) {
        const float *restrict r0 = x, *restrict r1 = x + wp, *restrict r2 = x + 2 * wp;
        float a0 = wk[0], a1 = wk[1], a2 = wk[2], b0 = wk[3], b1 = wk[4], b2 = wk[5];
        float c0 = wk[6], c1 = wk[7], c2 = wk[8];
        for (i = 0; i < n; i++)
            acc[i] += (a0 * r0[i] + a1 * r0[i + 1] + a2 * r0[i + 2]) + (b0 * r1[i] + b1 * r1[i + 1] + b2 * r1[i + 2])
                      + (c0 * r2[i] + c1 * r2[i + 1] + c2 * r2[i + 2]);
        return;
    }
    if (kh == 5 && kw == 5) {
        const float *restrict r0 = x, *restrict r1 = x + wp, *restrict r2 = x + 2 * wp;
        const float *restrict r3 = x + 3 * wp, *restrict r4 = x + 4 * wp;
        const float *w = wk;
        for (i = 0; i < n; i++)
            acc[i] += (w[0] * r0[i] + w[1] * r0[i + 1] + w[2] * r0[i + 2] + w[3] * r0[i + 3] + w[4] * r0[i + 4])
                      + (w[5] * r1[i] + w[6] * r1[i + 1] + w[7] * r1[i + 2] + w[8] * r1[i + 3] + w[9] * r1[i + 4])
                      + (w[10] * r2[i] + w[11] * r2[i + 1] + w[12] * r2[i + 2] + w[13] * r2[i + 3] + w[14] * r2[i + 4])
                      + (w[15] * r3[i] + w[16] * r3[i + 1] + w[17] * r3[i + 2] + w[18] * r3[i + 3] + w[19] * r3[i + 4])
                      + (w[20] * r4[i] + w[21] * r4[i + 1] + w[22] * r4[i + 2] + w[23] * r4[i + 3] + w[24] * r4[i + 4]);
        return;
    }
    for (ky = 0; ky < kh; ky++) mc_conv_row_s1(acc, x + ky * wp, wk + ky * kw, kw, (int)n);
}

void mc_conv2d(const float *x, const float *w, const float *bias, float *y, float *scratch,
               int n, int c, int h, int wd, int m, int oh, int ow,
               int kh, int kw, int sh, int sw, int pt, int pl, int dh, int dw, int groups, int epi)
{
    int cg = c / groups, mg = m / groups, plane = oh * ow;
    int b, o, ic, ky, kx, oy, ox, i;
    /* stride-1 rows: outputs [in0, in1) see every kernel column inside the input */
    int in0 = pl < ow ? pl : ow;
    int in1 = wd - kw + 1 + pl < ow ? wd - kw + 1 + pl : ow;
    int pointwise = kh == 1 && kw == 1 && sh == 1 && sw == 1 && pt == 0 && pl == 0 && oh == h && ow == wd;
    if (in1 < in0) in1 = in0;
    for (b = 0; b < n; b++) {
        for (o = 0; o < m; o++) {
            int g = o / mg;
            /* with a fused global average pool the plane is only scratch */
            float *yo = epi & MC_EPI_GAP ? scratch : y + ((long)b * m + o) * plane;
            float bv = bias ? bias[o] : 0.0f;
            if (pointwise && epi == (MC_EPI_RELU | MC_EPI_GAP) && cg <= 4) {
                y[(long)b * m + o] = mc_pointwise_relu_gap(x + ((long)b * c + (long)g * cg) * plane, w + (long)o * cg,
                                                           bv, cg, plane);
                continue;
            }
            if (pointwise) {
                mc_pointwise_plane(x + ((long)b * c + (long)g * cg) * plane, w + (long)o * cg, bv, yo, cg, plane);
                mc_epilogue(yo, plane, epi, y + (long)b * m + o);
                continue;
            }
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
            mc_epilogue(yo, plane, epi, y + (long)b * m + o);
        }
    }
}

void mc_conv2d_s1(const float *x, const float *w, const float *bias, float *y, float *scratch,
                  int n, int c, int h, int wd, int m, int oh, int ow, int kh, int kw, int pt, int pl,
                  int groups, int epi)
{
    int hp = oh + kh - 1, wp = ow + kw - 1;
    long plane = (long)hp * wp + kw;    /* slack: the last shifted read runs kw-1 past the plane */
    long span = (long)oh * wp;          /* output rows computed at the padded width */
    float *xp = scratch, *acc = scratch + (long)c * plane;
    int cg = c / groups, mg = m / groups;
    int cw = wd < wp - pl ? wd : wp - pl;  /* columns of an input row inside the padded frame */
    int b, ch, o, ic, iy, ix, oy;
    long p;
    for (b = 0; b < n; b++) {
        /* zero-padded copy of every input plane */
        for (ch = 0; ch < c; ch++) {
            float *d = xp + (long)ch * plane;
            const float *s = x + ((long)b * c + ch) * h * wd;
            for (p = 0; p < plane; p++) d[p] = 0.0f;
            for (iy = 0; iy < h && iy + pt < hp; iy++) {
                float *restrict dr = d + (long)(iy + pt) * wp + pl;
                const float *restrict sr = s + (long)iy * wd;
                for (ix = 0; ix < cw; ix++) dr[ix] = sr[ix];
            }
        }
        for (o = 0; o < m; o++) {
            int g = o / mg;
            float bv = bias ? bias[o] : 0.0f;
            const float *xg = xp + (long)g * cg * plane, *wo = w + (long)o * cg * kh * kw;
            float *yo;
            for (p = 0; p < span; p++) acc[p] = bv;
            for (ic = 0; ic < cg; ic++)
                mc_conv_taps_s1(acc, xg + (long)ic * plane, wo + (long)ic * kh * kw, kh, kw, wp, span);
            /* drop the padding columns (ReLU on the way); with a fused global average pool,
             * compact in place */
            yo = epi & MC_EPI_GAP ? acc : y + ((long)b * m + o) * oh * ow;
            for (oy = 0; oy < oh; oy++) {
                const float *ar = acc + (long)oy * wp;
                float *yr = yo + (long)oy * ow;
                if (epi & MC_EPI_RELU)
                    for (ix = 0; ix < ow; ix++) yr[ix] = ar[ix] > 0.0f ? ar[ix] : 0.0f;
                else
                    for (ix = 0; ix < ow; ix++) yr[ix] = ar[ix];
            }
            if (epi & MC_EPI_GAP) mc_epilogue(yo, (long)oh * ow, MC_EPI_GAP, y + (long)b * m + o);
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
            /* B is [k, n]: accumulate rows of B, contiguous in j, four rows per pass so that the
               output row is loaded and stored once per four multiply-adds */
            for (j = 0; j < n; j++) yr[j] = 0.0f;
            for (p = 0; p + 3 < k; p += 4) {
                float a0 = a[i * a_is + p * a_ps], a1 = a[i * a_is + (p + 1) * a_ps];
                float a2 = a[i * a_is + (p + 2) * a_ps], a3 = a[i * a_is + (p + 3) * a_ps];
                const float *restrict b0 = b + (long)p * n, *restrict b1 = b0 + n, *restrict b2 = b1 + n,
                                      *restrict b3 = b2 + n;
                for (j = 0; j < n; j++) yr[j] += a0 * b0[j] + a1 * b1[j] + a2 * b2[j] + a3 * b3[j];
            }
            for (; p < k; p++) {
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
