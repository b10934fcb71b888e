/* mirrorc kernels: float32, NCHW, portable freestanding C99.
 *
 * No malloc, no stdio, no libm (OP-TEE TAs have none): the few transcendental functions the ops
 * need are written here (mc_expf, mc_logf, mc_powf). Every shape is passed as plain ints that the
 * generated model code fixes at compile time; output sizes (including ceil_mode and auto_pad) are
 * computed by the compiler, never here. Outputs never alias inputs. */
#ifndef MIRRORC_KERNELS_H
#define MIRRORC_KERNELS_H

#include <stdint.h>

#define MC_MAX_RANK 6

/* ---- math (mc_math.c) ---- */
float mc_expf(float x);
float mc_logf(float x);            /* x > 0 */
float mc_powf(float x, float y);   /* x > 0 */
float mc_tanhf(float x);
float mc_sqrtf(float x);           /* x >= 0; no libm, no errno */

/* ---- dense (mc_dense.c) ---- */
/* Epilogues a conv kernel applies to its output (the lowering fuses a Conv's only consumer
 * chain Relu -> GlobalAveragePool): ReLU, then the mean of each output plane, so y is [n, m]. */
enum { MC_EPI_RELU = 1, MC_EPI_GAP = 2 };
/* y[n, m, oh, ow] = bias[m] + sum conv(x[n, c, h, w], w[m, c/groups, kh, kw]); pads top/left only
 * are needed: bottom/right padding is implied by oh/ow. bias may be 0. scratch (oh * ow floats) is
 * used with MC_EPI_GAP only, else it may be 0. */
void mc_conv2d(const float *x, const float *w, const float *bias, float *y, float *scratch,
               int n, int c, int h, int wd, int m, int oh, int ow,
               int kh, int kw, int sh, int sw, int pt, int pl, int dh, int dw, int groups, int epi);
/* the same for stride 1, dilation 1, faster: each output accumulates all its taps from a
 * zero-padded copy; scratch holds c * ((oh+kh-1) * (ow+kw-1) + kw) + oh * (ow+kw-1) floats */
void mc_conv2d_s1(const float *x, const float *w, const float *bias, float *y, float *scratch,
                  int n, int c, int h, int wd, int m, int oh, int ow, int kh, int kw, int pt, int pl,
                  int groups, int epi);
/* y[m, n] = alpha * A'[m, k] B'[k, n] + beta * C, C broadcast from [c_rows, c_cols]
 * (each 1 or the full size; c may be 0). A is [k, m] when trans_a, B is [n, k] when trans_b. */
void mc_gemm(const float *a, const float *b, const float *c, float *y, int m, int k, int n,
             int trans_a, int trans_b, float alpha, float beta, int c_rows, int c_cols);
/* batched y[i] = a[i] b[i] with [m, k] x [k, n]; stride 0 broadcasts an operand over the batch. */
void mc_matmul(const float *a, const float *b, float *y, int batch, int m, int k, int n,
               int a_stride, int b_stride);

/* ---- pooling and normalisation (mc_pool.c) ---- */
void mc_maxpool2d(const float *x, float *y, int nc, int h, int w, int oh, int ow, int kh, int kw,
                  int sh, int sw, int pt, int pl, int dh, int dw);
/* pb/pr (bottom/right pads) bound the window for count_include_pad, as in onnxruntime. */
void mc_avgpool2d(const float *x, float *y, int nc, int h, int w, int oh, int ow, int kh, int kw,
                  int sh, int sw, int pt, int pl, int pb, int pr, int count_include_pad);
void mc_global_avgpool(const float *x, float *y, int nc, int hw);
void mc_global_maxpool(const float *x, float *y, int nc, int hw);
/* y = x / (bias + alpha/size * sum_{window} x^2)^beta across channels */
void mc_lrn(const float *x, float *y, int n, int c, int hw, int size, float alpha, float beta,
            float bias);
/* y = x * scale[c] + shift[c] (a BatchNormalization that could not be folded into a Conv) */
void mc_channel_affine(const float *x, const float *scale, const float *shift, float *y, int n,
                       int c, int hw);

/* ---- element-wise and data movement (mc_elementwise.c) ---- */
void mc_relu(const float *x, float *y, int n);
void mc_leaky_relu(const float *x, float *y, int n, float alpha);
void mc_clip(const float *x, float *y, int n, float lo, float hi);
void mc_sigmoid(const float *x, float *y, int n);
void mc_tanh(const float *x, float *y, int n);
void mc_elu(const float *x, float *y, int n, float alpha);

enum { MC_ADD = 0, MC_SUB = 1, MC_MUL = 2, MC_DIV = 3, MC_PRELU = 4, MC_MAX = 5, MC_MIN = 6 };
/* same-shape y = a op b over n elements */
void mc_binary(int op, const float *a, const float *b, float *y, int n);
/* broadcast y[shape] = a op b; sa/sb are element strides per output dim (0 = broadcast) */
void mc_binary_bcast(int op, const float *a, const float *b, float *y, int rank, const int *shape,
                     const int *sa, const int *sb);

void mc_copy(const float *x, float *y, int n);
/* one input of a Concat: outer blocks of inner_x floats land at offset within blocks of inner_y */
void mc_concat_part(const float *x, float *y, int outer, int inner_x, int inner_y, int offset);
/* y = transpose(x, perm), x of shape in_shape */
void mc_transpose(const float *x, float *y, int rank, const int *in_shape, const int *perm);
/* index of the first maximum of x[0..n) */
int32_t mc_argmax(const float *x, int n);
/* ArgMax along an axis: x is [outer, len, inner], y is [outer, inner] */
void mc_argmax_axis(const float *x, int32_t *y, int outer, int len, int inner, int select_last);

/* ---- data movement and normalisation (registry part B) ---- */
/* mc_layout.c: Split, Slice, Pad, Resize */
/* one output of a Split: outer blocks of inner_y floats taken at offset within blocks of inner_x */
void mc_split_part(const float *x, float *y, int outer, int inner_y, int inner_x, int offset);
/* y = x[starts[d] + i * steps[d]] along each dim (steps may be negative), y of shape out_shape */
void mc_slice(const float *x, float *y, int rank, const int *in_shape, const int *starts,
              const int *steps, const int *out_shape);
#define MC_PAD_CONSTANT 0
#define MC_PAD_REFLECT 1
#define MC_PAD_EDGE 2
/* y[o] = x[o - begins] inside x, else value (constant), the mirrored (reflect) or nearest (edge) x */
void mc_pad(const float *x, float *y, int rank, const int *in_shape, const int *begins,
            const int *out_shape, int mode, float value);
/* 2-D resize of nc planes by per-row and per-column source tables (the compiler resolves the
 * coordinate mode): y = lerp(lerp(x[y0,x0], x[y0,x1], wx), lerp(x[y1,x0], x[y1,x1], wx), wy);
 * nearest has y1 = y0, wy = 0 */
void mc_resize2d(const float *x, float *y, int nc, int h, int w, int oh, int ow, const int *y0,
                 const int *y1, const float *wy, const int *x0, const int *x1, const float *wx);
/* mc_pool.c: LayerNormalization over the last `inner` floats of each of `outer` rows; scale and
 * bias hold `inner` floats; bias, mean_out and inv_std_out (`outer` floats each) may be 0 */
void mc_layernorm(const float *x, const float *scale, const float *bias, float *y, float *mean_out,
                  float *inv_std_out, int outer, int inner, float eps);
/* ---- activations and reductions (registry part A) ---- */
float mc_erff(float x);            /* mc_math.c; relative error < 2e-7 (series below 0.8, erfc fit above) */
/* mc_activation.c */
void mc_hardswish(const float *x, float *y, int n);
void mc_erf(const float *x, float *y, int n);
/* tanh_approx: Gelu's approximate="tanh", else the exact 0.5 x (1 + erf(x / sqrt 2)) */
void mc_gelu(const float *x, float *y, int n, int tanh_approx);
/* mc_reduce.c: y[o, i] = mean or max over j of x[o, j, i], x being [outer, len, inner] (the
 * compiler merges neighbouring axes, so global average pooling is [N*C, H*W, 1]) */
enum { MC_REDUCE_MEAN = 0, MC_REDUCE_MAX = 1 };
void mc_reduce_axis(int kind, const float *x, float *y, int outer, int len, int inner);
/* the same over any axes: reduced[d] != 0 marks a reduced dim of x's shape; y in x's order */
void mc_reduce_strided(int kind, const float *x, float *y, int rank, const int *shape, const int *reduced);

#endif
