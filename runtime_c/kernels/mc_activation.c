/* Activations of today's CNNs and transformers' MLPs: HardSwish (MobileNetV3), Erf and Gelu. */
#include "mirrorc_kernels.h"

void mc_hardswish(const float *x, float *y, int n)
{
    int i;
    for (i = 0; i < n; i++) {
        /* x * HardSigmoid(x) with alpha 1/6, beta 0.5, as ONNX defines it */
        float g = x[i] * (1.0f / 6.0f) + 0.5f;
        g = g < 0.0f ? 0.0f : (g > 1.0f ? 1.0f : g);
        y[i] = x[i] * g;
    }
}

void mc_erf(const float *x, float *y, int n)
{
    int i;
    for (i = 0; i < n; i++) y[i] = mc_erff(x[i]);
}

void mc_gelu(const float *x, float *y, int n, int tanh_approx)
{
    int i;
    if (tanh_approx) {
        for (i = 0; i < n; i++) {
            float v = x[i];
            float inner = 0.7978845608028654f * (v + 0.044715f * v * v * v); /* sqrt(2/pi) */
            y[i] = 0.5f * v * (1.0f + mc_tanhf(inner));
        }
    } else {
        for (i = 0; i < n; i++) y[i] = 0.5f * x[i] * (1.0f + mc_erff(x[i] * 0.7071067811865476f));
    }
}
