/* Pooling, LRN and per-channel affine (unfolded BatchNormalization). */
#include "mirrorc_kernels.h"

#define MC_LOWEST (-3.40282347e38f) /* what onnxruntime starts a max from */

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

void mc_maxpool2d(const float *x, float *y, int nc, int h, int w, int oh, int ow, int kh, int kw,
                  int sh, int sw, int pt, int pl, int dh, int dw)
{
    int p, oy, ox, ky, kx;
    for (p = 0; p < nc; p++) {
        const float *xp = x + (long)p * h * w;
        float *yp = y + (long)p * oh * ow;
        for (oy = 0; oy < oh; oy++) {
            int y0 = oy * sh - pt, ky0, ky1;
            float *restrict yr = yp + (long)oy * ow;
            mc_window(y0, dh, kh, h, &ky0, &ky1);
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

void mc_lrn(const float *x, float *y, int n, int c, int hw, int size, float alpha, float beta,
            float bias)
{
    /* ONNX: window [c - floor((size-1)/2), c + ceil((size-1)/2)] */
    int before = (size - 1) / 2, after = size - 1 - before;
    int b, ch, j, i;
    float a = alpha / (float)size;
    for (b = 0; b < n; b++) {
        const float *xb = x + (long)b * c * hw;
        float *yb = y + (long)b * c * hw;
        for (ch = 0; ch < c; ch++) {
            int lo = ch - before < 0 ? 0 : ch - before;
            int hi = ch + after > c - 1 ? c - 1 : ch + after;
            for (i = 0; i < hw; i++) {
                float sq = 0.0f, v;
                for (j = lo; j <= hi; j++) { v = xb[(long)j * hw + i]; sq += v * v; }
                float base = bias + a * sq, den;
                if (beta == 0.75f) { float r = mc_sqrtf(base); den = r * mc_sqrtf(r); } /* AlexNet, GoogLeNet */
                else den = mc_powf(base, beta);
                yb[(long)ch * hw + i] = xb[(long)ch * hw + i] / den;
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
