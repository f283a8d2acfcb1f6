// Products y = x W^T + b on the CPU for the fast backend (localbench/engine/backends/cpu_linear.py):
// a few input rows (a decode step) stream each weight row once at the memory bandwidth;
// many rows (a prompt) multiply float32 panels of the weight, converted once.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>
#include <cstring>
#include <vector>
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define LB_AVX2 1
#endif

namespace {

inline float bf16_to_float(uint16_t v) {
  uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

template <typename W>
inline float load(const W* w, int64_t k);
template <>
inline float load<float>(const float* w, int64_t k) { return w[k]; }
template <>
inline float load<at::BFloat16>(const at::BFloat16* w, int64_t k) {
  return bf16_to_float(reinterpret_cast<const uint16_t*>(w)[k]);
}
template <>
inline float load<at::Half>(const at::Half* w, int64_t k) { return static_cast<float>(w[k]); }

#ifdef LB_AVX2
inline __m256 load8(const float* w) { return _mm256_loadu_ps(w); }
inline __m256 load8(const at::BFloat16* w) {
  __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16));
}
inline __m256 load8(const at::Half* w) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w)));
}
inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
#endif

// Bytes ahead of the current read that each weight row is prefetched: the hardware
// prefetcher alone leaves a tenth of the read bandwidth unused on the row kernel.
constexpr int kPrefetchBytes = 512;

// Dot products of one weight row with M input rows (float32, K contiguous).
template <typename W, int M>
inline void row_dots(const W* w, const float* x, int64_t K, float* out) {
  int64_t k = 0;
#ifdef LB_AVX2
  __m256 acc[M][2];
  for (int m = 0; m < M; ++m) acc[m][0] = acc[m][1] = _mm256_setzero_ps();
  for (; k + 16 <= K; k += 16) {
    _mm_prefetch(reinterpret_cast<const char*>(w + k) + kPrefetchBytes, _MM_HINT_T0);
    __m256 w0 = load8(w + k), w1 = load8(w + k + 8);
    for (int m = 0; m < M; ++m) {
      acc[m][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + m * K + k), acc[m][0]);
      acc[m][1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + m * K + k + 8), acc[m][1]);
    }
  }
  for (int m = 0; m < M; ++m) out[m] = hsum(_mm256_add_ps(acc[m][0], acc[m][1]));
#else
  constexpr int L = 16;  // lanes the compiler vectorises
  float acc[M][L] = {};
  for (; k + L <= K; k += L)
    for (int m = 0; m < M; ++m)
      for (int l = 0; l < L; ++l) acc[m][l] += load(w, k + l) * x[m * K + k + l];
  for (int m = 0; m < M; ++m) {
    float s = 0.f;
    for (int l = 0; l < L; ++l) s += acc[m][l];
    out[m] = s;
  }
#endif
  for (; k < K; ++k)
    for (int m = 0; m < M; ++m) out[m] += load(w, k) * x[m * K + k];
}

// Dot products of R consecutive weight rows with one input row: R streams at once keep
// more reads in flight, which long rows need (K of 8192 and more: 10-15% more bandwidth
// than a row at a time on a 2-core AVX2 VM; rows of 1.5k lose by it).
constexpr int kBlockRows = 4;
constexpr int64_t kLongRow = 4096;

template <typename W, int R>
inline void block_dots(const W* w, const float* x, int64_t K, float* out) {
  int64_t k = 0;
#ifdef LB_AVX2
  __m256 acc[R][2];
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  for (; k + 32 <= K; k += 32) {
    const __m256 x0 = _mm256_loadu_ps(x + k), x1 = _mm256_loadu_ps(x + k + 8);
    const __m256 x2 = _mm256_loadu_ps(x + k + 16), x3 = _mm256_loadu_ps(x + k + 24);
    for (int r = 0; r < R; ++r) {
      const W* row = w + r * K + k;
      _mm_prefetch(reinterpret_cast<const char*>(row) + 2 * kPrefetchBytes, _MM_HINT_T0);
      acc[r][0] = _mm256_fmadd_ps(load8(row), x0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(load8(row + 8), x1, acc[r][1]);
      acc[r][0] = _mm256_fmadd_ps(load8(row + 16), x2, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(load8(row + 24), x3, acc[r][1]);
    }
  }
  for (int r = 0; r < R; ++r) out[r] = hsum(_mm256_add_ps(acc[r][0], acc[r][1]));
  for (; k < K; ++k)
    for (int r = 0; r < R; ++r) out[r] += load(w + r * K, k) * x[k];
#else
  for (int r = 0; r < R; ++r) row_dots<W, 1>(w + r * K, x, K, out + r);
#endif
}

// Rows begin .. end of W x for one input row: blocks of kBlockRows for long rows.
template <typename W>
inline void single_row_range(const W* weight, const float* x, int64_t K, int64_t begin,
                             int64_t end, float* y) {
  int64_t n = begin;
  if (K >= kLongRow)
    for (; n + kBlockRows <= end; n += kBlockRows)
      block_dots<W, kBlockRows>(weight + n * K, x, K, y + n);
  for (; n < end; ++n) row_dots<W, 1>(weight + n * K, x, K, y + n);
}

template <typename W, int M>
void row_product(const W* weight, const float* x, float* y, int64_t N, int64_t K) {
  if constexpr (M == 1) {
    at::parallel_for(0, N, 64, [&](int64_t begin, int64_t end) {
      single_row_range(weight, x, K, begin, end, y);
    });
    return;
  }
  at::parallel_for(0, N, 64, [&](int64_t begin, int64_t end) {
    float dots[M];
    for (int64_t n = begin; n < end; ++n) {
      row_dots<W, M>(weight + n * K, x, K, dots);
      for (int m = 0; m < M; ++m) y[m * N + n] = dots[m];
    }
  });
}

// Many input rows (a prompt): the weight is converted to float32 a panel of kPanel rows at
// a time, stored k-major (panel[k][j] = W[n0 + j][k]) in a buffer that stays in the
// core's cache, and multiplied with kTile input rows at a time, a kTile x kPanel block of
// results held in registers. Each weight value is converted once per call.
constexpr int kPanel = 16;
constexpr int kTile = 6;  // input rows per register block (12 of 16 AVX registers)

template <typename W>
void pack_panel(const W* weight, int64_t n0, int64_t rows, int64_t K, float* panel) {
  const W* w[kPanel];
  for (int64_t j = 0; j < kPanel; ++j) w[j] = weight + (n0 + std::min(j, rows - 1)) * K;
  for (int64_t k = 0; k < K; ++k)
    for (int64_t j = 0; j < kPanel; ++j) panel[k * kPanel + j] = load(w[j], k);
}

// Results of input rows m0 .. m0 + T against one packed panel, added into y's columns
// n0 .. n0 + cols.
template <int T>
inline void tile(const float* x, const float* panel, float* y, int64_t m0, int64_t n0,
                 int64_t cols, int64_t N, int64_t K) {
#ifdef LB_AVX2
  // Named accumulators: an array of them is kept in memory by GCC, a store per update.
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
         c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  const float* r0 = x + m0 * K;
  for (int64_t k = 0; k < K; ++k) {
    const __m256 b0 = _mm256_loadu_ps(panel + k * kPanel);
    const __m256 b1 = _mm256_loadu_ps(panel + k * kPanel + 8);
    __m256 a;
#define LB_ROW(i)                                  \
  if constexpr (T > i) {                           \
    a = _mm256_broadcast_ss(r0 + i * K + k);       \
    c##i##0 = _mm256_fmadd_ps(a, b0, c##i##0);     \
    c##i##1 = _mm256_fmadd_ps(a, b1, c##i##1);     \
  }
    LB_ROW(0) LB_ROW(1) LB_ROW(2) LB_ROW(3) LB_ROW(4) LB_ROW(5)
#undef LB_ROW
  }
  const __m256 results[6][2] = {{c00, c01}, {c10, c11}, {c20, c21},
                                {c30, c31}, {c40, c41}, {c50, c51}};
  for (int i = 0; i < T; ++i) {
    float out[kPanel];
    _mm256_storeu_ps(out, results[i][0]);
    _mm256_storeu_ps(out + 8, results[i][1]);
    for (int64_t j = 0; j < cols; ++j) y[(m0 + i) * N + n0 + j] = out[j];
  }
#else
  float acc[T][kPanel] = {};
  for (int64_t k = 0; k < K; ++k)
    for (int i = 0; i < T; ++i) {
      const float a = x[(m0 + i) * K + k];
      for (int j = 0; j < kPanel; ++j) acc[i][j] += a * panel[k * kPanel + j];
    }
  for (int i = 0; i < T; ++i)
    for (int64_t j = 0; j < cols; ++j) y[(m0 + i) * N + n0 + j] = acc[i][j];
#endif
}

template <typename W>
void panel_product(const W* weight, const float* x, float* y, int64_t M, int64_t N, int64_t K) {
  const int64_t panels = (N + kPanel - 1) / kPanel;
  at::parallel_for(0, panels, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> panel(K * kPanel);
    for (int64_t p = begin; p < end; ++p) {
      const int64_t n0 = p * kPanel, cols = std::min<int64_t>(kPanel, N - n0);
      pack_panel(weight, n0, cols, K, panel.data());
      int64_t m0 = 0;
      for (; m0 + kTile <= M; m0 += kTile) tile<kTile>(x, panel.data(), y, m0, n0, cols, N, K);
      switch (M - m0) {
#define LB_REST(t) case t: tile<t>(x, panel.data(), y, m0, n0, cols, N, K); break;
        LB_REST(1) LB_REST(2) LB_REST(3) LB_REST(4) LB_REST(5)
#undef LB_REST
        default: break;
      }
    }
  });
}

template <typename W>
void dispatch(const W* weight, const float* x, float* y, int64_t M, int64_t N, int64_t K) {
  switch (M) {
#define LB_CASE(m) case m: row_product<W, m>(weight, x, y, N, K); return;
    LB_CASE(1) LB_CASE(2) LB_CASE(3) LB_CASE(4)
#undef LB_CASE
    default: panel_product(weight, x, y, M, N, K);
  }
}


// Rounding to the weight's dtype where the model's own modules round (float: none).
template <typename W>
inline float rnd(float v) { return static_cast<float>(W(v)); }
template <>
inline float rnd<float>(float v) { return v; }

template <typename W>
inline float val(const W* p, int64_t i) { return load(p, i); }

// out = rnd(w * rnd(x * rsqrt(mean(x^2) + eps))), as the Llama/Qwen2 RMSNorm computes it.
template <typename W>
void rms_norm(const W* x, const W* w, double eps, int64_t H, float* out) {
  double sum = 0.0;
  for (int64_t i = 0; i < H; ++i) {
    const float v = val(x, i);
    sum += static_cast<double>(v) * v;
  }
  const float r = 1.0f / std::sqrt(static_cast<float>(sum / H) + static_cast<float>(eps));
  for (int64_t i = 0; i < H; ++i) out[i] = rnd<W>(val(w, i) * rnd<W>(val(x, i) * r));
}

// One weight of a product: its rows, bias and size.
template <typename W>
struct Matrix {
  const W* w;
  const W* b;  // nullptr: no bias
  int64_t rows;
};

template <typename W>
Matrix<W> matrix(const torch::Tensor& weight, const c10::optional<torch::Tensor>& bias, int64_t K) {
  TORCH_CHECK(weight.is_contiguous() && weight.dim() == 2 && weight.size(1) == K, "weight shape");
  const W* b = nullptr;
  if (bias.has_value()) {
    TORCH_CHECK(bias->is_contiguous() && bias->numel() == weight.size(0), "bias shape");
    TORCH_CHECK(bias->scalar_type() == weight.scalar_type(), "bias dtype");
    b = reinterpret_cast<const W*>(bias->data_ptr());
  }
  return {reinterpret_cast<const W*>(weight.data_ptr()), b, weight.size(0)};
}

// The rows of several weights in one parallel region: out[n] = rnd(W_n . x + b_n) for the
// rows of each weight in turn (query, key and value: one region, no concatenated copy).
template <typename W>
void products(const std::vector<Matrix<W>>& parts, const float* x, int64_t K, float* out) {
  int64_t total = 0;
  for (const auto& p : parts) total += p.rows;
  at::parallel_for(0, total, 64, [&](int64_t begin, int64_t end) {
    int64_t offset = 0;
    for (const auto& p : parts) {
      const int64_t lo = std::max(begin, offset), hi = std::min(end, offset + p.rows);
      if (lo < hi) single_row_range(p.w, x, K, lo - offset, hi - offset, out + offset);
      for (int64_t n = lo; n < hi; ++n)
        out[n] = rnd<W>(p.b ? out[n] + val(p.b, n - offset) : out[n]);
      offset += p.rows;
    }
  });
}

inline float silu(float v) { return v / (1.0f + std::exp(-v)); }

// One decode step of one Llama/Qwen2 layer for one sequence, in place on x (1, H):
// norm, query/key/value products (+ bias), rotary embedding, cache write at `position`,
// grouped attention over positions 0..position (float32 softmax), output product and
// residual, norm, gate and up products with the SiLU gate, down product and residual.
// Values are rounded to the weights' dtype where the model's modules round them.
template <typename W>
void decode_layer_impl(torch::Tensor& x, const std::vector<torch::Tensor>& t,
                       const std::vector<c10::optional<torch::Tensor>>& bias, double in_eps,
                       double post_eps, int64_t position, double scale) {
  // t: in_norm, q, k, v, cos, sin, keys, values, o, post_norm, gate, up, down
  const auto &in_norm = t[0], &q_w = t[1], &k_w = t[2], &v_w = t[3], &cos_t = t[4],
             &sin_t = t[5], &keys = t[6], &values = t[7], &o_w = t[8], &post_norm = t[9],
             &gate_w = t[10], &up_w = t[11], &down_w = t[12];
  const int64_t H = x.size(-1);
  const int64_t kv_heads = keys.size(1), max_len = keys.size(2), D = keys.size(3);
  const int64_t q_size = q_w.size(0), kv_size = k_w.size(0), heads = q_size / D;
  const int64_t group = heads / kv_heads, I = gate_w.size(0);
  TORCH_CHECK(position >= 0 && position < max_len, "position outside the cache");
  TORCH_CHECK(kv_size == kv_heads * D && heads == group * kv_heads, "head shapes");
  W* xp = reinterpret_cast<W*>(x.data_ptr());
  std::vector<float> h(std::max(H, q_size)), qkv(q_size + 2 * kv_size), attn(q_size);
  // Attention's input: norm, then the three products in one region.
  rms_norm(xp, reinterpret_cast<const W*>(in_norm.data_ptr()), in_eps, H, h.data());
  products<W>({matrix<W>(q_w, bias[0], H), matrix<W>(k_w, bias[1], H), matrix<W>(v_w, bias[2], H)},
              h.data(), H, qkv.data());
  // Rotary embedding (q * cos + rotate_half(q) * sin, rounded as the module rounds).
  const W* cos_p = reinterpret_cast<const W*>(cos_t.data_ptr()) + position * D;
  const W* sin_p = reinterpret_cast<const W*>(sin_t.data_ptr()) + position * D;
  const int64_t half = D / 2;
  auto rotate = [&](float* v) {
    std::vector<float> r(D);
    for (int64_t i = 0; i < D; ++i) {
      const float other = i < half ? -v[i + half] : v[i - half];
      r[i] = rnd<W>(rnd<W>(v[i] * val(cos_p, i)) + rnd<W>(other * val(sin_p, i)));
    }
    std::memcpy(v, r.data(), D * sizeof(float));
  };
  for (int64_t head = 0; head < heads + kv_heads; ++head) rotate(qkv.data() + head * D);
  // The new key and value into the cache (1, kv_heads, max_len, D).
  W* kc = reinterpret_cast<W*>(keys.data_ptr());
  W* vc = reinterpret_cast<W*>(values.data_ptr());
  for (int64_t g = 0; g < kv_heads; ++g)
    for (int64_t i = 0; i < D; ++i) {
      kc[(g * max_len + position) * D + i] = W(qkv[q_size + g * D + i]);
      vc[(g * max_len + position) * D + i] = W(qkv[q_size + kv_size + g * D + i]);
    }
  // Attention of each query head over positions 0..position of its key/value head.
  const int64_t length = position + 1;
  at::parallel_for(0, heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(length), acc(D);
    for (int64_t head = begin; head < end; ++head) {
      const int64_t g = head / group;
      const float* q = qkv.data() + head * D;
      const W* kg = kc + g * max_len * D;
      const W* vg = vc + g * max_len * D;
      float top = -INFINITY;
      for (int64_t p = 0; p < length; ++p) {
        float s;
        row_dots<W, 1>(kg + p * D, q, D, &s);
        scores[p] = s * static_cast<float>(scale);
        top = std::max(top, scores[p]);
      }
      float total = 0.f;
      for (int64_t p = 0; p < length; ++p) total += (scores[p] = std::exp(scores[p] - top));
      std::fill(acc.begin(), acc.end(), 0.f);
      for (int64_t p = 0; p < length; ++p) {
        const float weight = rnd<W>(scores[p] / total);
        const W* v = vg + p * D;
        for (int64_t i = 0; i < D; ++i) acc[i] += weight * val(v, i);
      }
      for (int64_t i = 0; i < D; ++i) attn[head * D + i] = rnd<W>(acc[i]);
    }
  });
  // Output product and residual.
  std::vector<float> out(std::max(H, I));
  products<W>({matrix<W>(o_w, bias[3], q_size)}, attn.data(), q_size, out.data());
  for (int64_t i = 0; i < H; ++i) xp[i] = W(val(xp, i) + out[i]);
  // MLP: norm, gate and up products (row n of each together) with the SiLU gate, down.
  rms_norm(xp, reinterpret_cast<const W*>(post_norm.data_ptr()), post_eps, H, h.data());
  const Matrix<W> gate = matrix<W>(gate_w, c10::nullopt, H), up = matrix<W>(up_w, c10::nullopt, H);
  TORCH_CHECK(up.rows == I && down_w.size(1) == I, "MLP shapes");
  std::vector<float> gated(I);
  at::parallel_for(0, I, 64, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      float g, u;
      row_dots<W, 1>(gate.w + n * H, h.data(), H, &g);
      row_dots<W, 1>(up.w + n * H, h.data(), H, &u);
      gated[n] = rnd<W>(rnd<W>(silu(rnd<W>(g))) * rnd<W>(u));
    }
  });
  products<W>({matrix<W>(down_w, c10::nullopt, I)}, gated.data(), I, out.data());
  for (int64_t i = 0; i < H; ++i) xp[i] = W(val(xp, i) + out[i]);
}
}  // namespace

// x: (M, K), any float dtype; weight: (N, K) float32/bfloat16/float16 (copied when not
// contiguous);
// bias: (N,) or None. Returns (M, N) in the weight's dtype: products accumulated in
// float32, the bias added in float32, then rounded once, as PyTorch's addmm does.
torch::Tensor linear(torch::Tensor x, torch::Tensor weight, c10::optional<torch::Tensor> bias) {
  TORCH_CHECK(x.device().is_cpu() && weight.device().is_cpu(), "CPU tensors expected");
  TORCH_CHECK(x.dim() == 2 && weight.dim() == 2 && x.size(1) == weight.size(1), "shapes");
  TORCH_CHECK(x.size(0) >= 1, "at least one input row");
  weight = weight.contiguous();  // the same tensor when it already is
  const int64_t M = x.size(0), N = weight.size(0), K = weight.size(1);
  auto x32 = x.to(torch::kFloat32).contiguous();
  auto y = torch::empty({M, N}, x32.options());
  const float* xp = x32.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  switch (weight.scalar_type()) {
    case torch::kFloat32: dispatch(weight.data_ptr<float>(), xp, yp, M, N, K); break;
    case torch::kBFloat16: dispatch(weight.data_ptr<at::BFloat16>(), xp, yp, M, N, K); break;
    case torch::kFloat16: dispatch(weight.data_ptr<at::Half>(), xp, yp, M, N, K); break;
    default: TORCH_CHECK(false, "float32, bfloat16 or float16 weight expected");
  }
  if (bias.has_value()) y.add_(bias->to(torch::kFloat32));
  return y.to(weight.scalar_type());
}

// One decode step of a layer, in place on x (see decode_layer_impl). tensors: input
// norm, q, k, v, cos (max_len, D), sin, keys, values (1, kv_heads, max_len, D), o, post
// norm, gate, up, down; biases: q, k, v, o (None where the model has none).
torch::Tensor decode_layer(torch::Tensor x, std::vector<torch::Tensor> tensors,
                           std::vector<c10::optional<torch::Tensor>> biases, double in_eps,
                           double post_eps, int64_t position, double scale) {
  TORCH_CHECK(tensors.size() == 13 && biases.size() == 4, "13 tensors and 4 biases expected");
  TORCH_CHECK(x.is_contiguous() && x.numel() == x.size(-1), "one contiguous row expected");
  for (const auto& t : tensors) {
    TORCH_CHECK(t.device().is_cpu() && t.is_contiguous(), "contiguous CPU tensors expected");
    TORCH_CHECK(t.scalar_type() == x.scalar_type(), "one dtype expected");
  }
  switch (x.scalar_type()) {
    case torch::kFloat32:
      decode_layer_impl<float>(x, tensors, biases, in_eps, post_eps, position, scale);
      break;
    case torch::kBFloat16:
      decode_layer_impl<at::BFloat16>(x, tensors, biases, in_eps, post_eps, position, scale);
      break;
    case torch::kFloat16:
      decode_layer_impl<at::Half>(x, tensors, biases, in_eps, post_eps, position, scale);
      break;
    default: TORCH_CHECK(false, "float32, bfloat16 or float16 expected");
  }
  return x;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("linear", &linear, py::arg("x"), py::arg("weight"), py::arg("bias") = py::none());
  m.def("decode_layer", &decode_layer);
}
