/* Pooling, LRN and per-channel affine (unfolded BatchNormalization). */
#include "mirrorc_kernels.h"

#define MC_LOWEST (-3.40282347e38f) /* what onnxruntime starts a max from */

static int mc_ceil_div(int a, int b) { return (a + b - 1) / b; }

/* first k in [0, kn) with 0 <= start + k*d, and one past the last with start + k*d < size */
static void mc_window(int start, int d, int kn, int size, int *k0, int *k1)
{
    int lo, hi;
    if (d == 1) { /* no division on the common path: it runs once per output element */
        lo = start < 0 ? -start : 0;
        hi = size - start;
    } else {
        lo = start < 0 ? (-start + d - 1) / d : 0;
        hi = size - 1 - start < 0 ? 0 : (size - 1 - start) / d + 1;
    }
    *k0 = lo;
    *k1 = hi < kn ? hi : kn;
}

/* y[i] = max of the k x k window at column i * s of rows r[0..k): the window fully inside, for the
 * common 2x2 and 3x3 kernels with strides 1 and 2. Each output is one register max of all its
 * taps, stored once; the fixed stride lets the compiler vectorise (the generic path below makes
 * one read-modify-write pass per tap, slow on the short rows of CNN feature maps). */
static void mc_maxpool_row(float *restrict y, const float *const *r, int n, int k, int s)
{
    int i;
#define MC_MAX(a, b) ((a) > (b) ? (a) : (b))
#define MC_MAX3(p, j) MC_MAX(MC_MAX(p[j], p[(j) + 1]), p[(j) + 2])
    const float *r0 = r[0], *r1 = r[1], *r2 = r[2];
    if (k == 3 && s == 1)
        for (i = 0; i < n; i++) y[i] = MC_MAX(MC_MAX(MC_MAX3(r0, i), MC_MAX3(r1, i)), MC_MAX3(r2, i));
    else if (k == 3)
        for (i = 0; i < n; i++) y[i] = MC_MAX(MC_MAX(MC_MAX3(r0, 2 * i), MC_MAX3(r1, 2 * i)), MC_MAX3(r2, 2 * i));
    else if (s == 1)
        for (i = 0; i < n; i++) y[i] = MC_MAX(MC_MAX(r0[i], r0[i + 1]), MC_MAX(r1[i], r1[i + 1]));
    else
        for (i = 0; i < n; i++) y[i] = MC_MAX(MC_MAX(r0[2 * i], r0[2 * i + 1]), MC_MAX(r1[2 * i], r1[2 * i + 1]));
#undef MC_MAX3
#undef MC_MAX
}

void mc_maxpool2d(const float *x, float *y, int nc, int h, int w, int oh, int ow, int kh, int kw,
                  int sh, int sw, int pt, int pl, int dh, int dw)
{
    int p, oy, ox, ky, kx;
    /* fast path: square 2x2 / 3x3 window, stride 1 or 2 along rows, no dilation */
    int fast = kh == kw && (kh == 2 || kh == 3) && (sw == 1 || sw == 2) && dh == 1 && dw == 1;
    /* output columns [in0, in1) have their whole window inside the row */
    int in0 = mc_ceil_div(pl, sw), in1 = w - kw + pl >= 0 ? (w - kw + pl) / sw + 1 : 0;
    if (in1 > ow) in1 = ow;
    if (in0 > in1) in0 = in1;
    for (p = 0; p < nc; p++) {
        const float *xp = x + (long)p * h * w;
        float *yp = y + (long)p * oh * ow;
        for (oy = 0; oy < oh; oy++) {
            int y0 = oy * sh - pt, ky0, ky1;
            float *restrict yr = yp + (long)oy * ow;
            mc_window(y0, dh, kh, h, &ky0, &ky1);
            if (fast && ky1 > ky0) {
                /* rows in the top/bottom padding repeat a valid row of the window: max is unchanged */
                const float *row[3], *r[3];
                for (ky = 0; ky < 3; ky++) {
                    int k = ky < ky0 ? ky0 : ky >= ky1 ? ky1 - 1 : ky;
                    row[ky] = xp + (long)(y0 + k) * w;
                    r[ky] = row[ky] + (long)in0 * sw - pl;
                }
                mc_maxpool_row(yr + in0, r, in1 - in0, kh, sw);
                /* the few border columns: their window clipped to the row */
                for (ox = 0; ox < ow; ox++) {
                    int x0, a, e;
                    float best = MC_LOWEST;
                    if (ox == in0) ox = in1;   /* skip the interior */
                    if (ox >= ow) break;
                    x0 = ox * sw - pl;
                    a = x0 < 0 ? 0 : x0;
                    e = x0 + kw < w ? x0 + kw : w;
                    for (ky = 0; ky < kh; ky++)
                        for (kx = a; kx < e; kx++) best = row[ky][kx] > best ? row[ky][kx] : best;
                    yr[ox] = best;
                }
                continue;
            }
            for (ox = 0; ox < ow; ox++) yr[ox] = MC_LOWEST;
            /* one pass per kernel tap over the output columns that see it: vectorises for sw == 1 */
            for (ky = ky0; ky < ky1; ky++) {
                const float *restrict xr = xp + (long)(y0 + ky * dh) * w;
                for (kx = 0; kx < kw; kx++) {
                    int off = kx * dw - pl, lo, hi;
                    mc_window(off, sw, ow, w, &lo, &hi);
                    if (sw == 1) {
                        for (ox = lo; ox < hi; ox++) yr[ox] = xr[ox + off] > yr[ox] ? xr[ox + off] : yr[ox];
                    } else {
                        for (ox = lo; ox < hi; ox++) {
                            float v = xr[ox * sw + off];
                            yr[ox] = v > yr[ox] ? v : yr[ox];
                        }
                    }
                }
            }
        }
    }
}

void mc_avgpool2d(const float *x, float *y, int nc, int h, int w, int oh, int ow, int kh, int kw,
                  int sh, int sw, int pt, int pl, int pb, int pr, int count_include_pad)
{
    int p, oy, ox, iy, ix;
    for (p = 0; p < nc; p++) {
        const float *xp = x + (long)p * h * w;
        float *yp = y + (long)p * oh * ow;
        for (oy = 0; oy < oh; oy++) {
            int y0 = oy * sh - pt, y1 = y0 + kh;
            if (y1 > h + pb) y1 = h + pb;          /* the padded extent bounds the window */
            for (ox = 0; ox < ow; ox++) {
                int x0 = ox * sw - pl, x1 = x0 + kw, cy0, cy1, cx0, cx1, count;
                float s = 0.0f;
                if (x1 > w + pr) x1 = w + pr;
                cy0 = y0 < 0 ? 0 : y0; cy1 = y1 > h ? h : y1;
                cx0 = x0 < 0 ? 0 : x0; cx1 = x1 > w ? w : x1;
                for (iy = cy0; iy < cy1; iy++)
                    for (ix = cx0; ix < cx1; ix++) s += xp[iy * w + ix];
                count = count_include_pad ? (y1 - y0) * (x1 - x0) : (cy1 - cy0) * (cx1 - cx0);
                yp[oy * ow + ox] = count > 0 ? s / (float)count : 0.0f;
            }
        }
    }
}

void mc_global_avgpool(const float *x, float *y, int nc, int hw)
{
    int p, i, j;
    for (p = 0; p < nc; p++) {
        const float *xp = x + (long)p * hw;
        /* eight partial sums: a vectorisable reduction without -ffast-math */
        float s[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f}, t;
        for (i = 0; i + 8 <= hw; i += 8)
            for (j = 0; j < 8; j++) s[j] += xp[i + j];
        t = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
        for (; i < hw; i++) t += xp[i];
        y[p] = t / (float)hw;
    }
}

void mc_global_maxpool(const float *x, float *y, int nc, int hw)
{
    int p, i;
    for (p = 0; p < nc; p++) {
        float best = MC_LOWEST;
        for (i = 0; i < hw; i++) if (x[(long)p * hw + i] > best) best = x[(long)p * hw + i];
        y[p] = best;
    }
}

/* 1/sqrt(v) for a positive normal float v: bit-level first guess, three Newton steps (the error
 * squares each step). No branches, so loops over it vectorise; mc_sqrtf handles every input. */
static float mc_rsqrt_pos(float v)
{
    union { uint32_t u; float f; } g;
    float r;
    g.f = v;
    g.u = 0x5f375a86u - (g.u >> 1);
    r = g.f;
    r = r * (1.5f - 0.5f * v * r * r);
    r = r * (1.5f - 0.5f * v * r * r);
    return r * (1.5f - 0.5f * v * r * r);
}

void mc_lrn(const float *x, float *y, int n, int c, int hw, int size, float alpha, float beta,
            float bias)
{
    /* ONNX: window [c - floor((size-1)/2), c + ceil((size-1)/2)] */
    int before = (size - 1) / 2, after = size - 1 - before;
    int b, ch, j, i;
    float a = alpha / (float)size;
    /* AlexNet, GoogLeNet: beta 0.75 and base >= bias > 0, so base^-0.75 = r * sqrt(r) with
     * r = 1/sqrt(base) comes from two branch-free rsqrts, vectorised over the plane */
    int fast = beta == 0.75f && bias >= 1.17549435e-38f && a >= 0.0f;
    for (b = 0; b < n; b++) {
        const float *xb = x + (long)b * c * hw;
        float *yb = y + (long)b * c * hw;
        for (ch = 0; ch < c; ch++) {
            int lo = ch - before < 0 ? 0 : ch - before;
            int hi = ch + after > c - 1 ? c - 1 : ch + after;
            const float *restrict xc = xb + (long)ch * hw;
            float *restrict yc = yb + (long)ch * hw;
            /* the window's sum of squares in y, one channel at a time (long contiguous passes) */
            for (i = 0; i < hw; i++) yc[i] = 0.0f;
            for (j = lo; j <= hi; j++) {
                const float *restrict xj = xb + (long)j * hw;
                for (i = 0; i < hw; i++) yc[i] += xj[i] * xj[i];
            }
            if (fast) {
                for (i = 0; i < hw; i++) {
                    float base = bias + a * yc[i], r;
                    base = base > 3.40282347e38f ? 3.40282347e38f : base; /* inf -> largest float */
                    r = mc_rsqrt_pos(base);
                    yc[i] = xc[i] * (r * (r * mc_rsqrt_pos(r)));
                }
                continue;
            }
            for (i = 0; i < hw; i++) {
                float base = bias + a * yc[i], den;
                if (beta == 0.75f) { float r = mc_sqrtf(base); den = r * mc_sqrtf(r); }
                else den = mc_powf(base, beta);
                yc[i] = xc[i] / den;
            }
        }
    }
}

void mc_channel_affine(const float *x, const float *scale, const float *shift, float *y, int n,
                       int c, int hw)
{
    int b, ch, i;
    for (b = 0; b < n; b++)
        for (ch = 0; ch < c; ch++) {
            const float *xp = x + ((long)b * c + ch) * hw;
            float *yp = y + ((long)b * c + ch) * hw;
            float s = scale[ch], t = shift[ch];
            for (i = 0; i < hw; i++) yp[i] = xp[i] * s + t;
        }
}

void mc_layernorm(const float *x, const float *scale, const float *bias, float *y, float *mean_out,
                  float *inv_std_out, int outer, int inner, float eps)
{
    int o, i;
    for (o = 0; o < outer; o++) {
        const float *xo = x + (long)o * inner;
        float *yo = y + (long)o * inner;
        float mean = 0.0f, var = 0.0f, inv;
        for (i = 0; i < inner; i++) mean += xo[i];
        mean /= (float)inner;
        for (i = 0; i < inner; i++) var += (xo[i] - mean) * (xo[i] - mean);
        inv = 1.0f / mc_sqrtf(var / (float)inner + eps);
        if (mean_out) mean_out[o] = mean;
        if (inv_std_out) inv_std_out[o] = inv;
        for (i = 0; i < inner; i++) {
            float v = (xo[i] - mean) * inv * scale[i];
            yo[i] = bias ? v + bias[i] : v;
        }
    }
}
