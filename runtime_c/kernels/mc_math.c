/* Transcendental functions for freestanding builds (OP-TEE TAs link no libm).
 * Cephes-style single-precision approximations: range reduction plus a short polynomial,
 * relative error a few ulp over the ranges the ops use. */
#include "mirrorc_kernels.h"

typedef union { uint32_t u; float f; } mc_bits;

static float mc_ldexpf(float x, int n)
{
    mc_bits s;
    /* split large exponents so 2^n stays a normal float at each step */
    while (n > 127) { x *= 1.7014118e38f; n -= 127; }
    while (n < -126) { x *= 1.1754944e-38f; n += 126; }
    s.u = (uint32_t)(n + 127) << 23;
    return x * s.f;
}

float mc_expf(float x)
{
    mc_bits inf;
    float t, r, p;
    int n;
    if (x != x) return x;
    if (x > 88.7228390f) { inf.u = 0x7f800000u; return inf.f; }
    if (x < -103.972084f) return 0.0f;
    t = x * 1.44269504088896341f;
    n = (int)(t + (t >= 0.0f ? 0.5f : -0.5f));
    /* x - n ln2 with ln2 split in two so the subtraction is exact */
    r = x - (float)n * 0.693359375f;
    r = r - (float)n * -2.12194440e-4f;
    p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    return mc_ldexpf(p, n);
}

float mc_logf(float x)
{
    mc_bits v;
    float y, z;
    int e = 0;
    if (x != x) return x;
    if (x <= 0.0f) { v.u = 0xff800000u; return v.f; }
    v.f = x;
    if ((v.u >> 23) == 0) { v.f = x * 33554432.0f; e = -25; } /* subnormal: scale by 2^25 */
    if ((v.u >> 23) >= 0xffu) return x;                        /* +inf */
    e += (int)((v.u >> 23) & 0xffu) - 126;
    v.u = (v.u & 0x807fffffu) | (126u << 23);                  /* mantissa in [0.5, 1) */
    x = v.f;
    if (x < 0.707106781186547524f) { e -= 1; x = x + x - 1.0f; }
    else x = x - 1.0f;
    z = x * x;
    y = 7.0376836292e-2f;
    y = y * x - 1.1514610310e-1f;
    y = y * x + 1.1676998740e-1f;
    y = y * x - 1.2420140846e-1f;
    y = y * x + 1.4249322787e-1f;
    y = y * x - 1.6668057665e-1f;
    y = y * x + 2.0000714765e-1f;
    y = y * x - 2.4999993993e-1f;
    y = y * x + 3.3333331174e-1f;
    y = y * x * z;
    y += -2.12194440e-4f * (float)e;
    y += -0.5f * z;
    x = x + y;
    return x + 0.693359375f * (float)e;
}

float mc_powf(float x, float y)
{
    if (y == 0.0f) return 1.0f;
    if (y == 1.0f) return x;
    return mc_expf(y * mc_logf(x));
}

float mc_tanhf(float x)
{
    float a = x < 0.0f ? -x : x, r;
    if (x != x) return x;
    if (a > 9.0f) r = 1.0f;
    else if (a < 0.1f) {
        /* odd Taylor series: 1 - 2/(e^2a + 1) would cancel catastrophically near 0 */
        float z = a * a;
        r = a * (1.0f + z * (-1.0f / 3.0f + z * (2.0f / 15.0f + z * (-17.0f / 315.0f))));
    } else r = 1.0f - 2.0f / (mc_expf(2.0f * a) + 1.0f);
    return x < 0.0f ? -r : r;
}

float mc_sqrtf(float x)
{
    mc_bits v;
    float r;
    int i;
    if (x <= 0.0f || x != x) return x == 0.0f ? x : 0.0f / 0.0f;
    if (x > 3.4028234e38f) return x; /* +inf */
    /* 1/sqrt(x): bit-level first guess, then Newton steps (error squares each step) */
    v.f = x;
    v.u = 0x5f375a86u - (v.u >> 1);
    r = v.f;
    for (i = 0; i < 3; i++) r = r * (1.5f - 0.5f * x * r * r);
    r = x * r;                              /* sqrt(x) */
    return 0.5f * (r + x / r);              /* one Heron step rounds it in */
}

float mc_erff(float x)
{
    float a = x < 0.0f ? -x : x, r;
    if (x != x) return x;
    if (a < 0.8f) {
        /* Maclaurin series 2/sqrt(pi) sum (-1)^k x^(2k+1) / (k! (2k+1)) to k = 9: truncation
         * error below 3e-10 relative on |x| < 0.8, where 1 - erfc(x) would cancel */
        float z = a * a;
        r = 1.0f / 685440.0f - z * (1.0f / 6894720.0f); /* Horner from k = 9 down: c_k = 1/(k! (2k+1)) */
        r = 1.0f / 75600.0f - z * r;
        r = 1.0f / 9360.0f - z * r;
        r = 1.0f / 1320.0f - z * r;
        r = 1.0f / 216.0f - z * r;
        r = 1.0f / 42.0f - z * r;
        r = 1.0f / 10.0f - z * r;
        r = 1.0f / 3.0f - z * r;
        r = 1.0f - z * r;
        r = 1.1283791670955126f * a * r;
    } else if (a > 9.0f) {
        r = 1.0f;
    } else {
        /* erfc by the Chebyshev fit of Numerical Recipes (erfcc): fractional error < 1.2e-7,
         * erf = 1 - erfc is within ~1e-7 relative for |x| >= 0.8 */
        float t = 1.0f / (1.0f + 0.5f * a);
        float p = 0.17087277f;
        p = p * t - 0.82215223f;
        p = p * t + 1.48851587f;
        p = p * t - 1.13520398f;
        p = p * t + 0.27886807f;
        p = p * t - 0.18628806f;
        p = p * t + 0.09678418f;
        p = p * t + 0.37409196f;
        p = p * t + 1.00002368f;
        p = p * t - 1.26551223f;
        r = 1.0f - t * mc_expf(-a * a + p);
    }
    return x < 0.0f ? -r : r;
}
