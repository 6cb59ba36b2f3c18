// Image kernels of the data pipeline, called through ctypes (mindcv/data/kernels.py), which releases the
// GIL around each call.
//
// Resampling reproduces Pillow's `Image.resize(size, filter, box)` bit for bit (bilinear and bicubic on
// 8-bit images): the same separable filters, widened by the downscaling factor (antialiasing), the same
// 22-bit fixed-point weights, a horizontal pass rounded to 8 bits and then a vertical pass. JPEG files are
// decoded with libjpeg(-turbo), as Pillow does, but only the rows and columns that the resampling reads
// (jpeg_skip_scanlines / jpeg_crop_scanline), and the rows are resampled as they are decoded.
#include <algorithm>
#include <cmath>
#include <csetjmp>
#include <cstddef>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "simd.h"

#ifdef __x86_64__
#include <immintrin.h>
#endif

#include <jpeglib.h>  // after <cstdio>: it uses FILE and size_t without including them

namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;
const mindcv_ops::Isa kIsa = mindcv_ops::DetectIsa();
enum Filter { kBilinear = 2, kBicubic = 3 };  // Pillow's numbers for Image.BILINEAR / Image.BICUBIC

// What the entry points return: 0, a positive code for data they cannot process, or a negative code for
// arguments they refuse (checked before any memory is read; mindcv/data/kernels.py turns them into errors).
enum Status : int {
  kOk = 0,
  kUndecodable = 1,       // not a JPEG that this kernel decodes cleanly (corrupt, truncated, ...)
  kUnsupportedColor = 2,  // CMYK / YCCK JPEG
  kOutOfMemory = 3,
  kBadSize = -1,          // an image or output side <= 0 or above kMaxSide, or an empty batch
  kBadChannels = -2,      // not 1 or 3 channels
  kBadBox = -3,           // a box edge not finite, right < left, bottom < top, or outside the image
  kBadBuffer = -4,        // a null pointer, or a buffer length that does not match the sizes
  kBadFilter = -5,        // not bilinear or bicubic
  kBadReduction = -6,     // not 1, 2, 4 or 8
  kBadParameters = -7,    // not one mean / std value (scale, bias) or fill value per channel, not 6 coefficients
};
// Sides up to 2^24 pixels: box edges are single precision (as in Pillow), exact up to there, and every
// index product below stays far from overflowing.
constexpr int64_t kMaxSide = int64_t{1} << 24;

inline bool ValidSide(int64_t side) { return side > 0 && side <= kMaxSide; }
inline bool ValidFilter(int filter) { return filter == kBilinear || filter == kBicubic; }

// A box (left, top, right, bottom), rounded to single precision as MakeTaps and Pillow use it, inside a
// width x height image: 0 <= left <= right <= width, 0 <= top <= bottom <= height (Pillow's own rule; an
// empty box is allowed, as in Pillow). NaN fails every comparison, so it is refused too.
bool BoxInside(const double *box, int width, int height) {
  const float left = static_cast<float>(box[0]), top = static_cast<float>(box[1]);
  const float right = static_cast<float>(box[2]), bottom = static_cast<float>(box[3]);
  return left >= 0.0f && top >= 0.0f && right >= left && bottom >= top && right <= static_cast<float>(width) &&
         bottom <= static_cast<float>(height);
}

double FilterWeight(int filter, double x) {
  x = std::fabs(x);
  if (filter == kBilinear) return x < 1.0 ? 1.0 - x : 0.0;
  constexpr double a = -0.5;  // Keys' cubic with a = -0.5, Pillow's bicubic
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
  return 0.0;
}

// Fixed-point weights of one axis: output i reads inputs first[i] .. first[i] + count[i] - 1.
struct Taps {
  int width = 0;  // weights stored per output
  std::vector<int> first, count;
  std::vector<int32_t> weights;
  int lowest() const { return first.empty() ? 0 : first.front(); }
  int end() const { return first.empty() ? 0 : first.back() + count.back(); }
};

// The box edges are single precision, and so is their difference, as in Pillow.
Taps MakeTaps(int in_size, float box_start, float box_end, int out_size, int filter) {
  const double scale = static_cast<double>(box_end - box_start) / out_size;
  const double filter_scale = scale < 1.0 ? 1.0 : scale;
  const double support = (filter == kBilinear ? 1.0 : 2.0) * filter_scale;
  const double inverse_scale = 1.0 / filter_scale;  // multiplied, not divided: Pillow's rounding
  Taps taps;
  taps.width = static_cast<int>(std::ceil(support)) * 2 + 1;
  taps.first.resize(out_size);
  taps.count.resize(out_size);
  taps.weights.assign(static_cast<size_t>(out_size) * taps.width, 0);
  std::vector<double> w(taps.width);
  for (int i = 0; i < out_size; ++i) {
    const double center = box_start + (i + 0.5) * scale;
    int lo = static_cast<int>(center - support + 0.5);
    int hi = static_cast<int>(center + support + 0.5);
    if (lo < 0) lo = 0;
    if (hi > in_size) hi = in_size;
    double total = 0.0;
    for (int k = 0; k < hi - lo; ++k) {
      w[k] = FilterWeight(filter, (k + lo - center + 0.5) * inverse_scale);
      total += w[k];
    }
    for (int k = 0; k < hi - lo; ++k) {
      const double normalized = total != 0.0 ? w[k] / total : w[k];
      const double fixed = normalized * (1 << kPrecisionBits);
      taps.weights[static_cast<size_t>(i) * taps.width + k] =
          static_cast<int32_t>(fixed < 0 ? fixed - 0.5 : fixed + 0.5);
    }
    taps.first[i] = lo;
    taps.count[i] = hi - lo;
  }
  return taps;
}

inline uint8_t Clip8(int32_t sum) {
  sum >>= kPrecisionBits;
  return static_cast<uint8_t>(sum < 0 ? 0 : (sum > 255 ? 255 : sum));
}

// The horizontal pass, one row at a time, from a line buffer that the caller fills with `line_pixels` pixels
// starting at input column `line_start`. Taps are laid out [tap][output x] (padded to whole vectors, with
// zero weights), so that AVX2 computes 8 outputs at once: one gather of 4 bytes per tap serves all three
// channels of a pixel.
class RowResampler {
 public:
  RowResampler(const Taps &taps, int line_start, int line_pixels, int channels)
      : channels_(channels),
        out_w_(static_cast<int>(taps.first.size())),
        padded_w_((out_w_ + 7) / 8 * 8),
        taps_(taps.width),
        offsets_(static_cast<size_t>(taps_) * padded_w_, 0),
        weights_(static_cast<size_t>(taps_) * padded_w_, 0),
        line_(static_cast<size_t>(line_pixels) * channels + 128, 0),  // vector loads read past the end
        avx2_(kIsa != mindcv_ops::Isa::kBase) {
    for (int x = 0; x < out_w_; ++x)
      for (int k = 0; k < taps.count[x]; ++k) {
        offsets_[static_cast<size_t>(k) * padded_w_ + x] = (taps.first[x] + k - line_start) * channels;
        weights_[static_cast<size_t>(k) * padded_w_ + x] = taps.weights[static_cast<size_t>(x) * taps.width + k];
      }
    PlanVbmi(taps, line_start);
  }

  uint8_t *line() { return line_.data(); }

  // One output row from line(); mirrored left-right when hflip.
  void Run(uint8_t *out, bool hflip) const {
#ifdef MINDCV_X86
    if (vbmi_) return RunVbmi(out, hflip);
    if (avx2_) return channels_ == 3 ? RunAvx2<3>(out, hflip) : RunAvx2<1>(out, hflip);
#endif
    RunScalar(out, hflip);
  }

 private:
  // With AVX-512 VBMI, 8 RGB outputs come from one 128-byte window of the line: per tap, one byte permute
  // (vpermi2b) picks the 24 input bytes, which are widened and multiplied by the weights. Only when every
  // block's window fits (downscaling by up to about 3x).
  static constexpr int kBlock = 8, kWindow = 128, kLanes = kBlock * 3;

  void PlanVbmi(const Taps &taps, int line_start) {
    vbmi_ = false;
    if (channels_ != 3 || !mindcv_ops::HasAvx512Vbmi()) return;
    const int blocks = padded_w_ / kBlock;
    block_start_.resize(blocks);
    vbmi_index_.assign(static_cast<size_t>(blocks) * taps_ * 64, 0);
    vbmi_weights_.assign(static_cast<size_t>(blocks) * taps_ * kLanes, 0);
    for (int b = 0; b < blocks; ++b) {
      const int x0 = b * kBlock;
      block_start_[b] = (taps.first[x0] - line_start) * 3;
      for (int x = x0; x < std::min(x0 + kBlock, out_w_); ++x)
        for (int k = 0; k < taps.count[x]; ++k) {
          const int offset = (taps.first[x] + k - taps.first[x0]) * 3;
          if (offset + 2 >= kWindow) return;  // does not fit: use the AVX2 path
          const size_t at = static_cast<size_t>(b) * taps_ + k;
          for (int c = 0; c < 3; ++c) {
            vbmi_index_[at * 64 + (x - x0) * 3 + c] = static_cast<uint8_t>(offset + c);
            vbmi_weights_[at * kLanes + (x - x0) * 3 + c] = taps.weights[static_cast<size_t>(x) * taps.width + k];
          }
        }
    }
    scratch_.resize(static_cast<size_t>(padded_w_) * 3);
    vbmi_ = true;
  }

#ifdef MINDCV_X86
  MINDCV_AVX512_VBMI void RunVbmi(uint8_t *out, bool hflip) const {
    const __m512i init = _mm512_set1_epi32(1 << (kPrecisionBits - 1)), zero = _mm512_setzero_si512();
    uint8_t *row = scratch_.data();
    for (int b = 0; b < padded_w_ / kBlock; ++b) {
      const uint8_t *window = line_.data() + block_start_[b];
      const __m512i low = _mm512_loadu_si512(window), high = _mm512_loadu_si512(window + 64);
      __m512i sums_a = init;                                 // lanes 0..15
      __m256i sums_b = _mm512_castsi512_si256(init);         // lanes 16..23
      for (int k = 0; k < taps_; ++k) {
        const size_t at = static_cast<size_t>(b) * taps_ + k;
        const __m512i bytes = _mm512_permutex2var_epi8(low, _mm512_loadu_si512(&vbmi_index_[at * 64]), high);
        const int32_t *w = &vbmi_weights_[at * kLanes];
        sums_a = _mm512_add_epi32(sums_a, _mm512_mullo_epi32(_mm512_cvtepu8_epi32(_mm512_castsi512_si128(bytes)),
                                                             _mm512_loadu_si512(w)));
        sums_b = _mm256_add_epi32(sums_b, _mm256_mullo_epi32(_mm256_cvtepu8_epi32(_mm512_extracti32x4_epi32(bytes, 1)),
                                                             _mm256_loadu_si256(reinterpret_cast<const __m256i *>(w + 16))));
      }
      // >> 22, below 0 -> 0, above 255 -> 255 (saturating narrowing)
      const __m512i a = _mm512_max_epi32(_mm512_srai_epi32(sums_a, kPrecisionBits), zero);
      const __m256i c = _mm256_max_epi32(_mm256_srai_epi32(sums_b, kPrecisionBits), _mm512_castsi512_si256(zero));
      _mm_storeu_si128(reinterpret_cast<__m128i *>(row + b * kLanes), _mm512_cvtusepi32_epi8(a));
      _mm_storel_epi64(reinterpret_cast<__m128i *>(row + b * kLanes + 16), _mm256_cvtusepi32_epi8(c));
    }
    if (!hflip) {
      std::memcpy(out, row, static_cast<size_t>(out_w_) * 3);
    } else {
      for (int x = 0; x < out_w_; ++x) std::memcpy(out + (out_w_ - 1 - x) * 3, row + x * 3, 3);
    }
  }
#endif

  void RunScalar(uint8_t *out, bool hflip) const {
    for (int x = 0; x < out_w_; ++x)
      for (int c = 0; c < channels_; ++c) {
        int32_t sum = 1 << (kPrecisionBits - 1);
        for (int k = 0; k < taps_; ++k) {
          const size_t at = static_cast<size_t>(k) * padded_w_ + x;
          sum += line_[offsets_[at] + c] * weights_[at];
        }
        out[(hflip ? out_w_ - 1 - x : x) * channels_ + c] = Clip8(sum);
      }
  }

#ifdef MINDCV_X86
  template <int C>
  MINDCV_AVX2 void RunAvx2(uint8_t *out, bool hflip) const {
    const __m256i low_byte = _mm256_set1_epi32(0xFF), zero = _mm256_setzero_si256();
    const __m256i max8 = _mm256_set1_epi32(255);
    alignas(32) int32_t clipped[C][8];
    for (int xb = 0; xb < padded_w_; xb += 8) {
      __m256i sums[C];
      for (int c = 0; c < C; ++c) sums[c] = _mm256_set1_epi32(1 << (kPrecisionBits - 1));
      for (int k = 0; k < taps_; ++k) {
        const size_t at = static_cast<size_t>(k) * padded_w_ + xb;
        const __m256i index = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(&offsets_[at]));
        const __m256i weight = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(&weights_[at]));
        const __m256i pixel = _mm256_i32gather_epi32(reinterpret_cast<const int *>(line_.data()), index, 1);
        for (int c = 0; c < C; ++c) {
          const __m256i value = _mm256_and_si256(_mm256_srli_epi32(pixel, 8 * c), low_byte);
          sums[c] = _mm256_add_epi32(sums[c], _mm256_mullo_epi32(value, weight));
        }
      }
      for (int c = 0; c < C; ++c) {
        const __m256i shifted = _mm256_srai_epi32(sums[c], kPrecisionBits);
        _mm256_store_si256(reinterpret_cast<__m256i *>(clipped[c]),
                           _mm256_min_epi32(_mm256_max_epi32(shifted, zero), max8));
      }
      for (int x = xb; x < std::min(xb + 8, out_w_); ++x)
        for (int c = 0; c < C; ++c) out[(hflip ? out_w_ - 1 - x : x) * C + c] = static_cast<uint8_t>(clipped[c][x - xb]);
    }
  }
#endif

  int channels_, out_w_, padded_w_, taps_;
  std::vector<int32_t> offsets_, weights_;
  std::vector<uint8_t> line_;
  bool avx2_, vbmi_ = false;
  std::vector<int32_t> block_start_, vbmi_weights_;
  std::vector<uint8_t> vbmi_index_;
  mutable std::vector<uint8_t> scratch_;
};

// The vertical pass: output row y = sum_k w[y][k] * input row (first[y] + k), where input row r starts at
// rows + (r - row_offset) * stride and is `row_len` bytes long; then the optional left-right mirror of the
// `channels`-channel pixels.
__attribute__((always_inline)) inline void ResampleColumnsBody(const uint8_t *rows, int row_offset, size_t stride,
                                                               int row_len, const Taps &taps, int channels,
                                                               bool hflip, int32_t *sums, uint8_t *out) {
  const int out_rows = static_cast<int>(taps.first.size());
  const int pixels = row_len / channels;
  for (int y = 0; y < out_rows; ++y) {
    const int32_t *w = &taps.weights[static_cast<size_t>(y) * taps.width];
    for (int i = 0; i < row_len; ++i) sums[i] = 1 << (kPrecisionBits - 1);
    for (int k = 0; k < taps.count[y]; ++k) {
      const uint8_t *src = rows + static_cast<size_t>(taps.first[y] + k - row_offset) * stride;
      const int32_t weight = w[k];
      for (int i = 0; i < row_len; ++i) sums[i] += src[i] * weight;
    }
    uint8_t *dst = out + static_cast<size_t>(y) * row_len;
    if (!hflip) {
      for (int i = 0; i < row_len; ++i) dst[i] = Clip8(sums[i]);
    } else {
      for (int x = 0; x < pixels; ++x)
        for (int c = 0; c < channels; ++c) dst[(pixels - 1 - x) * channels + c] = Clip8(sums[x * channels + c]);
    }
  }
}

MINDCV_AVX2 void ResampleColumnsAvx2(const uint8_t *rows, int row_offset, size_t stride, int row_len,
                                     const Taps &taps, int channels, bool hflip, int32_t *sums, uint8_t *out) {
  ResampleColumnsBody(rows, row_offset, stride, row_len, taps, channels, hflip, sums, out);
}

MINDCV_AVX512_WIDE void ResampleColumnsAvx512(const uint8_t *rows, int row_offset, size_t stride, int row_len,
                                              const Taps &taps, int channels, bool hflip, int32_t *sums,
                                              uint8_t *out) {
  ResampleColumnsBody(rows, row_offset, stride, row_len, taps, channels, hflip, sums, out);
}

void ResampleColumns(const uint8_t *rows, int row_offset, size_t stride, int row_len, const Taps &taps,
                     int channels, bool hflip, uint8_t *out) {
  std::vector<int32_t> sums(row_len);
  if (kIsa == mindcv_ops::Isa::kAvx512)
    ResampleColumnsAvx512(rows, row_offset, stride, row_len, taps, channels, hflip, sums.data(), out);
  else if (kIsa != mindcv_ops::Isa::kBase)
    ResampleColumnsAvx2(rows, row_offset, stride, row_len, taps, channels, hflip, sums.data(), out);
  else
    ResampleColumnsBody(rows, row_offset, stride, row_len, taps, channels, hflip, sums.data(), out);
}

// Pillow (13) resamples vertically first when the image loses more than twice as many rows as columns.
bool VerticalFirst(int width, int height, int out_w, int out_h) {
  return height > out_h && height - out_h > 2 * (width - out_w);
}

// Columns [first, end) of the input that the horizontal taps read.
void TapRange(const Taps &taps, int *first, int *end) {
  *first = INT32_MAX;
  *end = 0;
  for (size_t i = 0; i < taps.first.size(); ++i) {
    *first = std::min(*first, taps.first[i]);
    *end = std::max(*end, taps.first[i] + taps.count[i]);
  }
}

// Both passes, in Pillow's order, over the input pixels (x, y) for x in [col0, col0 + cols) and y in the rows the
// vertical taps read; pixel (x, y) is at pixels + (y - row0) * stride + (x - col0) * channels.
void ResampleRegion(const uint8_t *pixels, size_t stride, int row0, int col0, int cols, int channels,
                    const Taps &horizontal, const Taps &vertical, bool vertical_first, bool hflip, uint8_t *out) {
  RowResampler row_resampler(horizontal, col0, cols, channels);
  const int out_w = static_cast<int>(horizontal.first.size()), out_h = static_cast<int>(vertical.first.size());
  const size_t in_row = static_cast<size_t>(cols) * channels, out_row = static_cast<size_t>(out_w) * channels;
  if (vertical_first) {
    std::vector<uint8_t> rows(out_h * in_row);
    ResampleColumns(pixels, row0, stride, static_cast<int>(in_row), vertical, channels, false, rows.data());
    for (int y = 0; y < out_h; ++y) {
      std::memcpy(row_resampler.line(), &rows[y * in_row], in_row);
      row_resampler.Run(out + y * out_row, hflip);
    }
  } else {
    const int first = vertical.lowest(), end = vertical.end();
    std::vector<uint8_t> rows((end - first) * out_row);
    for (int r = first; r < end; ++r) {
      std::memcpy(row_resampler.line(), pixels + static_cast<size_t>(r - row0) * stride, in_row);
      row_resampler.Run(&rows[(r - first) * out_row], false);
    }
    ResampleColumns(rows.data(), first, out_row, static_cast<int>(out_row), vertical, channels, hflip, out);
  }
}

struct ErrorManager {
  jpeg_error_mgr base;
  jmp_buf escape;
};

void ErrorExit(j_common_ptr cinfo) { longjmp(reinterpret_cast<ErrorManager *>(cinfo->err)->escape, 1); }

// Warnings (corrupt or truncated data) are failures too: the caller then decodes with Pillow, which decides.
void EmitMessage(j_common_ptr cinfo, int level) {
  if (level < 0) longjmp(reinterpret_cast<ErrorManager *>(cinfo->err)->escape, 1);
}

// Errors and warnings longjmp to errors->escape instead of exiting; call after setjmp(errors->escape), since
// jpeg_create_decompress itself can fail.
void CreateDecompress(jpeg_decompress_struct *cinfo, ErrorManager *errors) {
  cinfo->err = jpeg_std_error(&errors->base);
  errors->base.error_exit = ErrorExit;
  errors->base.emit_message = EmitMessage;
  jpeg_create_decompress(cinfo);
}

// The buffers live outside the function that calls setjmp, so that a longjmp skips no destructor.
struct JpegBuffers {
  Taps horizontal, vertical;
  std::vector<uint8_t> rows;
};

// Decodes the rows and columns that the resampling reads (and a margin: chroma upsampling reads neighbouring
// pixels, and the margin keeps the decoded pixels identical to a full decode's), then resamples them.
int DecodeRegion(jpeg_decompress_struct *cinfo, ErrorManager *errors, JpegBuffers *buffers, const uint8_t *data,
                 size_t size, int reduction, const double *box, int out_w, int out_h, int filter, int hflip,
                 uint8_t *out) {
  if (setjmp(errors->escape)) return kUndecodable;
  CreateDecompress(cinfo, errors);
  jpeg_mem_src(cinfo, data, static_cast<unsigned long>(size));
  if (jpeg_read_header(cinfo, TRUE) != JPEG_HEADER_OK) return kUndecodable;
  if (cinfo->jpeg_color_space != JCS_YCbCr && cinfo->jpeg_color_space != JCS_GRAYSCALE &&
      cinfo->jpeg_color_space != JCS_RGB)
    return kUnsupportedColor;  // CMYK / YCCK: Pillow converts those
  cinfo->out_color_space = JCS_RGB;
  cinfo->scale_num = 1;
  cinfo->scale_denom = reduction;
  jpeg_calc_output_dimensions(cinfo);
  if (!BoxInside(box, static_cast<int>(cinfo->output_width), static_cast<int>(cinfo->output_height)))
    return kBadBox;
  jpeg_start_decompress(cinfo);
  const int width = static_cast<int>(cinfo->output_width), height = static_cast<int>(cinfo->output_height);
  buffers->horizontal = MakeTaps(width, box[0], box[2], out_w, filter);
  buffers->vertical = MakeTaps(height, box[1], box[3], out_h, filter);
  constexpr int kMargin = 16;
  int col_first, col_end;
  TapRange(buffers->horizontal, &col_first, &col_end);
  col_first = std::max(0, col_first - kMargin);
  col_end = std::min(width, col_end + kMargin);
  JDIMENSION col0 = 0, cols = static_cast<JDIMENSION>(width);
  // Progressive files decode identically only in full width (measured against Pillow)
  if (!jpeg_has_multiple_scans(cinfo) && (col_first > 0 || col_end < width)) {
    col0 = static_cast<JDIMENSION>(col_first);
    cols = static_cast<JDIMENSION>(col_end - col_first);
    jpeg_crop_scanline(cinfo, &col0, &cols);  // widens to whole iMCUs
  }
  const int row0 = buffers->vertical.lowest(), row1 = buffers->vertical.end();
  const int first_decoded = std::max(0, row0 - kMargin);
  if (first_decoded > 0 &&
      jpeg_skip_scanlines(cinfo, static_cast<JDIMENSION>(first_decoded)) != static_cast<JDIMENSION>(first_decoded))
    return kUndecodable;
  const size_t stride = static_cast<size_t>(cols) * 3;
  buffers->rows.resize((row1 - first_decoded) * stride);
  for (int r = first_decoded; r < row1; ++r) {
    JSAMPROW line = &buffers->rows[(r - first_decoded) * stride];
    if (jpeg_read_scanlines(cinfo, &line, 1) != 1) return kUndecodable;
  }
  ResampleRegion(buffers->rows.data(), stride, first_decoded, static_cast<int>(col0), static_cast<int>(cols), 3,
                 buffers->horizontal, buffers->vertical, VerticalFirst(width, height, out_w, out_h), hflip != 0,
                 out);
  return kOk;
}

// uint8 HWC -> float32 CHW, chw[c][p] = hwc[p][c] * scale[c] + bias[c] (a multiply, then an add, both rounded
// to float32: the same values as numpy's two operations).
template <int C>
__attribute__((always_inline)) inline void NormalizeBody(const uint8_t *hwc, int64_t pixels, const float *scale,
                                                         const float *bias, float *chw) {
  for (int c = 0; c < C; ++c) {  // one plane at a time: the compiler vectorizes the strided loads
    const float s = scale[c], b = bias[c];
    const uint8_t *src = hwc + c;
    float *dst = chw + c * pixels;
    for (int64_t p = 0; p < pixels; ++p) {
      const float scaled = src[p * C] * s;
      dst[p] = scaled + b;
    }
  }
}

template <int C>
MINDCV_AVX2 void NormalizeAvx2(const uint8_t *hwc, int64_t pixels, const float *scale, const float *bias,
                               float *chw) {
  NormalizeBody<C>(hwc, pixels, scale, bias, chw);
}

// Pillow's affine transform (Image.transform(size, AFFINE, coeffs, filter, fillcolor)) of one output pixel
// position: the input point (xin, yin) sampled with bilinear or bicubic (a = -1) interpolation, edge pixels
// repeated, values truncated to 8 bits; false when the point lies outside the image (the pixel keeps the fill).
// The arithmetic follows Pillow's operation by operation, so the results are identical.
inline int Floor(double v) { return v < 0.0 ? static_cast<int>(std::floor(v)) : static_cast<int>(v); }

inline double Cubic(double v1, double v2, double v3, double v4, double d) {
  const double p1 = v2, p2 = -v1 + v3, p3 = 2 * (v1 - v2) + v3 - v4, p4 = -v1 + v2 - v3 + v4;
  return p1 + d * (p2 + d * (p3 + d * p4));
}

template <int C>
void SamplePoint(const uint8_t *image, int width, int height, double xin, double yin, int filter, uint8_t *out) {
  xin -= 0.5;
  yin -= 0.5;
  int x = Floor(xin), y = Floor(yin);
  const double dx = xin - x, dy = yin - y;
  auto clip_x = [width](int v) { return v < 0 ? 0 : (v < width ? v : width - 1); };
  auto clip_y = [height](int v) { return v < 0 ? 0 : (v < height ? v : height - 1); };
  auto row = [&](int r) { return image + static_cast<size_t>(r) * width * C; };
  if (filter == kBilinear) {
    const int x0 = clip_x(x) * C, x1 = clip_x(x + 1) * C;
    const uint8_t *top = row(clip_y(y));
    const bool has_below = y + 1 >= 0 && y + 1 < height;
    const uint8_t *below = has_below ? row(y + 1) : nullptr;
    for (int c = 0; c < C; ++c) {
      const double v1 = top[x0 + c] + (top[x1 + c] - top[x0 + c]) * dx;
      const double v2 = has_below ? below[x0 + c] + (below[x1 + c] - below[x0 + c]) * dx : v1;
      out[c] = static_cast<uint8_t>(v1 + (v2 - v1) * dy);
    }
    return;
  }
  --x;
  --y;
  const int cols[4] = {clip_x(x) * C, clip_x(x + 1) * C, clip_x(x + 2) * C, clip_x(x + 3) * C};
  const uint8_t *rows[4] = {row(clip_y(y)), nullptr, nullptr, nullptr};
  for (int k = 1; k < 4; ++k) rows[k] = (y + k >= 0 && y + k < height) ? row(y + k) : nullptr;
  // A cubic at d == 0 is exactly its second sample (shears hit this in one direction): only what is used is
  // computed. A missing row repeats the one above.
  auto horizontal = [&](const uint8_t *r, int c) {
    return dx == 0.0 ? r[cols[1] + c] : Cubic(r[cols[0] + c], r[cols[1] + c], r[cols[2] + c], r[cols[3] + c], dx);
  };
  for (int c = 0; c < C; ++c) {
    double value;
    if (dy == 0.0) {
      value = rows[1] != nullptr ? horizontal(rows[1], c) : horizontal(rows[0], c);
    } else {
      double v[4];
      for (int k = 0; k < 4; ++k) v[k] = rows[k] != nullptr ? horizontal(rows[k], c) : v[k - 1];
      value = Cubic(v[0], v[1], v[2], v[3], dy);
    }
    out[c] = value <= 0.0 ? 0 : (value >= 255.0 ? 255 : static_cast<uint8_t>(value));
  }
}

#ifdef MINDCV_X86
// The bicubic sample of an RGB image with the three channels in the lanes of one AVX2 vector of doubles (the
// same operations per lane as SamplePoint, so the same results). `image` must be readable one byte past its end.
MINDCV_AVX2 __attribute__((always_inline)) inline __m256d LoadPixel(const uint8_t *p) {
  int32_t bytes;
  std::memcpy(&bytes, p, 4);
  return _mm256_cvtepi32_pd(_mm_cvtepu8_epi32(_mm_cvtsi32_si128(bytes)));
}

MINDCV_AVX2 __attribute__((always_inline)) inline __m256d CubicAvx2(__m256d v1, __m256d v2, __m256d v3, __m256d v4, __m256d d) {
  const __m256d two = _mm256_set1_pd(2.0);
  const __m256d p2 = _mm256_add_pd(_mm256_sub_pd(_mm256_setzero_pd(), v1), v3);
  const __m256d p3 = _mm256_sub_pd(_mm256_add_pd(_mm256_mul_pd(two, _mm256_sub_pd(v1, v2)), v3), v4);
  const __m256d p4 = _mm256_add_pd(_mm256_sub_pd(_mm256_add_pd(_mm256_sub_pd(_mm256_setzero_pd(), v1), v2), v3), v4);
  const __m256d inner = _mm256_add_pd(p3, _mm256_mul_pd(d, p4));
  return _mm256_add_pd(v2, _mm256_mul_pd(d, _mm256_add_pd(p2, _mm256_mul_pd(d, inner))));
}

MINDCV_AVX2 __attribute__((always_inline)) inline void SampleBicubicRgbAvx2(const uint8_t *image, int width, int height, double xin, double yin,
                                      uint8_t *out) {
  xin -= 0.5;
  yin -= 0.5;
  int x = Floor(xin), y = Floor(yin);
  const double dx = xin - x, dy = yin - y;
  --x;
  --y;
  auto clip_x = [width](int v) { return v < 0 ? 0 : (v < width ? v : width - 1); };
  const int cols[4] = {clip_x(x) * 3, clip_x(x + 1) * 3, clip_x(x + 2) * 3, clip_x(x + 3) * 3};
  const __m256d vdx = _mm256_set1_pd(dx);
  __m256d v[4];
  for (int k = dy == 0.0 ? 1 : 0; k < (dy == 0.0 ? 2 : 4); ++k) {  // at dy == 0 only row y + 1 counts
    int r = y + k;
    if (k > 0 && (r < 0 || r >= height)) {  // (never at dy == 0: row y + 1 is inside the image then)
      v[k] = v[k - 1];
      continue;
    }
    r = r < 0 ? 0 : (r < height ? r : height - 1);
    const uint8_t *row = image + static_cast<size_t>(r) * width * 3;
    v[k] = dx == 0.0 ? LoadPixel(row + cols[1])
                     : CubicAvx2(LoadPixel(row + cols[0]), LoadPixel(row + cols[1]), LoadPixel(row + cols[2]),
                                 LoadPixel(row + cols[3]), vdx);
  }
  __m256d value = dy == 0.0 ? v[1] : CubicAvx2(v[0], v[1], v[2], v[3], _mm256_set1_pd(dy));
  value = _mm256_min_pd(_mm256_max_pd(value, _mm256_setzero_pd()), _mm256_set1_pd(255.0));
  alignas(16) int32_t result[4];
  _mm_store_si128(reinterpret_cast<__m128i *>(result), _mm256_cvttpd_epi32(value));
  for (int c = 0; c < 3; ++c) out[c] = static_cast<uint8_t>(result[c]);
}

#endif

// Output pixel (x, y) samples the input at (xin, yin); false when that point is outside the image.
__attribute__((always_inline)) inline bool AffinePoint(const double *a, int x, int y, int width, int height,
                                                       double *xin, double *yin) {
  const double xo = x + 0.5, yo = y + 0.5;
  *xin = a[0] * xo + a[1] * yo + a[2];
  *yin = a[3] * xo + a[4] * yo + a[5];
  // written so that NaN (infinite or huge coefficients) counts as outside: the pixel keeps the fill
  return *xin >= 0.0 && *xin < width && *yin >= 0.0 && *yin < height;
}

#ifdef MINDCV_X86
MINDCV_AVX2 void AffineRgbBicubicAvx2(const uint8_t *image, int width, int height, const double *a,
                                      const uint8_t *fill, uint8_t *out) {
  std::vector<uint8_t> padded(image, image + static_cast<size_t>(width) * height * 3);
  padded.resize(padded.size() + 4);  // a pixel load reads 4 bytes
  double xin, yin;
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x, out += 3) {
      if (AffinePoint(a, x, y, width, height, &xin, &yin))
        SampleBicubicRgbAvx2(padded.data(), width, height, xin, yin, out);
      else
        std::memcpy(out, fill, 3);
    }
}
#endif

template <int C>
void Affine(const uint8_t *image, int width, int height, const double *a, int filter, const uint8_t *fill,
            uint8_t *out) {
#ifdef MINDCV_X86
  if (C == 3 && filter == kBicubic && kIsa != mindcv_ops::Isa::kBase)
    return AffineRgbBicubicAvx2(image, width, height, a, fill, out);
#endif
  double xin, yin;
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x, out += C) {
      if (AffinePoint(a, x, y, width, height, &xin, &yin))
        SamplePoint<C>(image, width, height, xin, yin, filter, out);
      else
        std::memcpy(out, fill, C);
    }
}

}  // namespace

extern "C" {

// Every entry point checks its arguments before it reads or writes memory and returns a Status: sizes, channel
// counts, filters, boxes inside the image, and the length (in elements) of every buffer it is given, which must
// match the sizes exactly.

// Decode the JPEG `data` at 1/reduction scale (1, 2, 4 or 8: libjpeg's DCT scaling), and resample the region
// `box` (left, top, right, bottom; pixels of the reduced image, fractions allowed) to out_w x out_h RGB pixels
// in `out` (HWC, uint8, out_len = out_h * out_w * 3 bytes), mirrored left-right when hflip. Returns kOk, a
// positive Status when the data is not a JPEG that this kernel decodes cleanly (then nothing is promised about
// `out`), or a negative one for refused arguments (a box outside the image is known only from the header).
int mindcv_jpeg_region(const uint8_t *data, size_t size, int reduction, const double *box, int out_w, int out_h,
                       int filter, int hflip, uint8_t *out, size_t out_len) {
  if (data == nullptr || box == nullptr || out == nullptr) return kBadBuffer;
  if (size == 0) return kUndecodable;
  if (reduction != 1 && reduction != 2 && reduction != 4 && reduction != 8) return kBadReduction;
  if (!ValidSide(out_w) || !ValidSide(out_h)) return kBadSize;
  if (out_len != static_cast<size_t>(out_w) * static_cast<size_t>(out_h) * 3) return kBadBuffer;
  if (!ValidFilter(filter)) return kBadFilter;
  jpeg_decompress_struct cinfo;
  std::memset(&cinfo, 0, sizeof(cinfo));
  ErrorManager errors;
  try {
    JpegBuffers buffers;
    const int status = DecodeRegion(&cinfo, &errors, &buffers, data, size, reduction, box, out_w, out_h, filter,
                                    hflip, out);
    jpeg_destroy_decompress(&cinfo);  // safe on a structure that was never created (all zero)
    return status;
  } catch (...) {  // out of memory: the caller falls back to Pillow
    jpeg_destroy_decompress(&cinfo);
    return kOutOfMemory;
  }
}

// Resample the region `box` of an 8-bit image (height rows of `stride` bytes, `channels` 1 or 3 interleaved,
// image_len bytes in all) to out_w x out_h (out_len = out_h * out_w * channels bytes), as
// Image.resize(size, filter, box) does; mirrored left-right when hflip.
int mindcv_resize(const uint8_t *image, size_t image_len, int width, int height, int64_t stride, int channels,
                  const double *box, int out_w, int out_h, int filter, int hflip, uint8_t *out,
                  size_t out_len) try {
  if (image == nullptr || box == nullptr || out == nullptr) return kBadBuffer;
  if (!ValidSide(width) || !ValidSide(height) || !ValidSide(out_w) || !ValidSide(out_h)) return kBadSize;
  if (channels != 1 && channels != 3) return kBadChannels;
  if (!ValidFilter(filter)) return kBadFilter;
  const int64_t row_bytes = static_cast<int64_t>(width) * channels;
  if (stride < row_bytes || stride > (int64_t{1} << 40) ||
      image_len < static_cast<size_t>(stride) * (height - 1) + static_cast<size_t>(row_bytes) ||
      out_len != static_cast<size_t>(out_w) * static_cast<size_t>(out_h) * channels)
    return kBadBuffer;
  if (!BoxInside(box, width, height)) return kBadBox;
  const Taps horizontal = MakeTaps(width, box[0], box[2], out_w, filter);
  const Taps vertical = MakeTaps(height, box[1], box[3], out_h, filter);
  int col_first, col_end;
  TapRange(horizontal, &col_first, &col_end);
  const int row0 = vertical.lowest();
  ResampleRegion(image + static_cast<size_t>(row0) * stride + static_cast<size_t>(col_first) * channels, stride,
                 row0, col_first, col_end - col_first, channels, horizontal, vertical,
                 VerticalFirst(width, height, out_w, out_h), hflip != 0, out);
  return kOk;
} catch (...) {  // out of memory
  return kOutOfMemory;
}

// Image.transform(size, Image.AFFINE, a, filter, fillcolor=fill) of a width x height image with 1 or 3
// interleaved channels (image_len = out_len = height * width * channels bytes; a: the n_coeffs = 6
// coefficients; fill: n_fill = channels values). Output pixel (x, y) samples input point
// (a0 (x + .5) + a1 (y + .5) + a2, a3 (x + .5) + a4 (y + .5) + a5).
int mindcv_affine(const uint8_t *image, size_t image_len, int width, int height, int channels, const double *a,
                  int n_coeffs, int filter, const uint8_t *fill, int n_fill, uint8_t *out, size_t out_len) try {
  if (image == nullptr || a == nullptr || fill == nullptr || out == nullptr) return kBadBuffer;
  if (!ValidSide(width) || !ValidSide(height)) return kBadSize;
  if (channels != 1 && channels != 3) return kBadChannels;
  if (!ValidFilter(filter)) return kBadFilter;
  if (n_coeffs != 6 || n_fill != channels) return kBadParameters;
  const size_t bytes = static_cast<size_t>(width) * static_cast<size_t>(height) * channels;
  if (image_len != bytes || out_len != bytes) return kBadBuffer;
  if (channels == 3)
    Affine<3>(image, width, height, a, filter, fill, out);
  else
    Affine<1>(image, width, height, a, filter, fill, out);
  return kOk;
} catch (...) {  // out of memory
  return kOutOfMemory;
}

// uint8 HWC -> float32 CHW, chw[c][p] = hwc[p][c] * scale[c] + bias[c]: see NormalizeBody. hwc_len = chw_len =
// pixels * channels elements; n_scale = n_bias = channels (1 or 3).
int mindcv_normalize(const uint8_t *hwc, size_t hwc_len, int64_t pixels, int channels, const float *scale,
                     int n_scale, const float *bias, int n_bias, float *chw, size_t chw_len) {
  if (hwc == nullptr || scale == nullptr || bias == nullptr || chw == nullptr) return kBadBuffer;
  if (pixels <= 0 || pixels > kMaxSide * kMaxSide) return kBadSize;
  if (channels != 1 && channels != 3) return kBadChannels;
  if (n_scale != channels || n_bias != channels) return kBadParameters;
  const size_t elements = static_cast<size_t>(pixels) * channels;
  if (hwc_len != elements || chw_len != elements) return kBadBuffer;
  const bool avx2 = kIsa != mindcv_ops::Isa::kBase;
  if (channels == 3)
    avx2 ? NormalizeAvx2<3>(hwc, pixels, scale, bias, chw) : NormalizeBody<3>(hwc, pixels, scale, bias, chw);
  else
    avx2 ? NormalizeAvx2<1>(hwc, pixels, scale, bias, chw) : NormalizeBody<1>(hwc, pixels, scale, bias, chw);
  return kOk;
}

// Width, height and number of components of a JPEG (from its header). Returns kOk, kUndecodable, or kBadBuffer
// for a null pointer.
int mindcv_jpeg_header(const uint8_t *data, size_t size, int *width, int *height, int *components) {
  if (data == nullptr || width == nullptr || height == nullptr || components == nullptr) return kBadBuffer;
  if (size == 0) return kUndecodable;
  jpeg_decompress_struct cinfo;
  std::memset(&cinfo, 0, sizeof(cinfo));
  ErrorManager errors;
  int status = kUndecodable;
  if (!setjmp(errors.escape)) {
    CreateDecompress(&cinfo, &errors);
    jpeg_mem_src(&cinfo, data, static_cast<unsigned long>(size));
    if (jpeg_read_header(&cinfo, TRUE) == JPEG_HEADER_OK) {
      *width = static_cast<int>(cinfo.image_width);
      *height = static_cast<int>(cinfo.image_height);
      *components = cinfo.num_components;
      status = kOk;
    }
  }
  jpeg_destroy_decompress(&cinfo);
  return status;
}

// Mixup in place: image i of the batch (n images of image_size floats, batch_len = n * image_size) becomes
// lam * x[i] + (1 - lam) * x[n - 1 - i], each product rounded to float32 before the sum.
int mindcv_mix_reversed(float *batch, size_t batch_len, int n, int64_t image_size, float lam) {
  if (batch == nullptr) return kBadBuffer;
  if (n <= 0 || image_size <= 0 || image_size > (int64_t{1} << 40)) return kBadSize;
  if (batch_len != static_cast<size_t>(n) * static_cast<size_t>(image_size)) return kBadBuffer;
  const float rest = 1.0f - lam;
  for (int i = 0; i < (n + 1) / 2; ++i) {
    float *a = batch + i * image_size, *b = batch + (n - 1 - i) * image_size;
    for (int64_t p = 0; p < image_size; ++p) {
      const float x = a[p], y = b[p];
      const float ax = x * lam, ry = y * rest, ay = y * lam, rx = x * rest;
      a[p] = ax + ry;
      b[p] = ay + rx;
    }
  }
  return kOk;
}

}  // extern "C"
