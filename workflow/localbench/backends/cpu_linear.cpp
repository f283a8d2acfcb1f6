// Products y = x W^T + b on the CPU for the fast backend (localbench/backends/cpu_linear.py):
// a few input rows (a decode step) stream each weight row once at the memory bandwidth;
// many rows (a prompt) multiply float32 panels of the weight, converted once.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cstring>
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

template <typename W, int M>
void row_product(const W* weight, const float* x, float* y, int64_t N, int64_t K) {
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

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("linear", &linear, py::arg("x"), py::arg("weight"), py::arg("bias") = py::none()); }
