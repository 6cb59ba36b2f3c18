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

#include <immintrin.h>

#include <jpeglib.h>  // after <cstdio>: it uses FILE and size_t without including them

namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;
enum Filter { kBilinear = 2, kBicubic = 3 };  // Pillow's numbers for Image.BILINEAR / Image.BICUBIC

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
      w[k] = FilterWeight(filter, (k + lo - center + 0.5) / filter_scale);
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
        line_(static_cast<size_t>(line_pixels) * channels + 4, 0),  // a gather reads 4 bytes
        avx2_(mindcv_ops::DetectIsa() != mindcv_ops::Isa::kBase) {
    for (int x = 0; x < out_w_; ++x)
      for (int k = 0; k < taps.count[x]; ++k) {
        offsets_[static_cast<size_t>(k) * padded_w_ + x] = (taps.first[x] + k - line_start) * channels;
        weights_[static_cast<size_t>(k) * padded_w_ + x] = taps.weights[static_cast<size_t>(x) * taps.width + k];
      }
  }

  uint8_t *line() { return line_.data(); }

  // One output row from line(); mirrored left-right when hflip.
  void Run(uint8_t *out, bool hflip) const {
    if (avx2_ && channels_ == 3)
      RunAvx2<3>(out, hflip);
    else if (avx2_)
      RunAvx2<1>(out, hflip);
    else
      RunScalar(out, hflip);
  }

 private:
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

  int channels_, out_w_, padded_w_, taps_;
  std::vector<int32_t> offsets_, weights_;
  std::vector<uint8_t> line_;
  bool avx2_;
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

void ResampleColumns(const uint8_t *rows, int row_offset, size_t stride, int row_len, const Taps &taps,
                     int channels, bool hflip, uint8_t *out) {
  std::vector<int32_t> sums(row_len);
  if (mindcv_ops::DetectIsa() != mindcv_ops::Isa::kBase)
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
  if (setjmp(errors->escape)) return 1;
  jpeg_mem_src(cinfo, data, static_cast<unsigned long>(size));
  if (jpeg_read_header(cinfo, TRUE) != JPEG_HEADER_OK) return 1;
  if (cinfo->jpeg_color_space != JCS_YCbCr && cinfo->jpeg_color_space != JCS_GRAYSCALE &&
      cinfo->jpeg_color_space != JCS_RGB)
    return 2;  // CMYK / YCCK: Pillow converts those
  cinfo->out_color_space = JCS_RGB;
  cinfo->scale_num = 1;
  cinfo->scale_denom = reduction;
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
    return 1;
  const size_t stride = static_cast<size_t>(cols) * 3;
  buffers->rows.resize((row1 - first_decoded) * stride);
  for (int r = first_decoded; r < row1; ++r) {
    JSAMPROW line = &buffers->rows[(r - first_decoded) * stride];
    if (jpeg_read_scanlines(cinfo, &line, 1) != 1) return 1;
  }
  ResampleRegion(buffers->rows.data(), stride, first_decoded, static_cast<int>(col0), static_cast<int>(cols), 3,
                 buffers->horizontal, buffers->vertical, VerticalFirst(width, height, out_w, out_h), hflip != 0,
                 out);
  return 0;
}

// uint8 HWC -> float32 CHW, chw[c][p] = hwc[p][c] * scale[c] + bias[c] (a multiply, then an add, both rounded
// to float32: the same values as numpy's two operations).
template <int C>
__attribute__((always_inline)) inline void NormalizeBody(const uint8_t *hwc, int64_t pixels, const float *scale,
                                                         const float *bias, float *chw) {
  for (int64_t p = 0; p < pixels; ++p)
    for (int c = 0; c < C; ++c) {
      const float scaled = hwc[p * C + c] * scale[c];
      chw[c * pixels + p] = scaled + bias[c];
    }
}

template <int C>
MINDCV_AVX2 void NormalizeAvx2(const uint8_t *hwc, int64_t pixels, const float *scale, const float *bias,
                               float *chw) {
  NormalizeBody<C>(hwc, pixels, scale, bias, chw);
}

}  // namespace

extern "C" {

// Decode the JPEG `data` at 1/reduction scale (1, 2, 4 or 8: libjpeg's DCT scaling), and resample the region
// `box` (left, top, right, bottom; pixels of the reduced image, fractions allowed) to out_w x out_h RGB pixels
// in `out` (HWC, uint8), mirrored left-right when hflip. Returns 0 on success, non-zero when the data is not
// a JPEG that this kernel decodes cleanly (then nothing is promised about `out`).
int mindcv_jpeg_region(const uint8_t *data, size_t size, int reduction, const double *box, int out_w, int out_h,
                       int filter, int hflip, uint8_t *out) {
  jpeg_decompress_struct cinfo;
  ErrorManager errors;
  cinfo.err = jpeg_std_error(&errors.base);
  errors.base.error_exit = ErrorExit;
  errors.base.emit_message = EmitMessage;
  jpeg_create_decompress(&cinfo);
  JpegBuffers buffers;
  const int status = DecodeRegion(&cinfo, &errors, &buffers, data, size, reduction, box, out_w, out_h, filter,
                                  hflip, out);
  jpeg_destroy_decompress(&cinfo);
  return status;
}

// Resample the region `box` of an 8-bit image (height rows of `stride` bytes, `channels` 1 or 3 interleaved)
// to out_w x out_h, as Image.resize(size, filter, box) does; mirrored left-right when hflip.
int mindcv_resize(const uint8_t *image, int width, int height, int stride, int channels, const double *box,
                  int out_w, int out_h, int filter, int hflip, uint8_t *out) {
  if (channels != 1 && channels != 3) return 1;
  const Taps horizontal = MakeTaps(width, box[0], box[2], out_w, filter);
  const Taps vertical = MakeTaps(height, box[1], box[3], out_h, filter);
  int col_first, col_end;
  TapRange(horizontal, &col_first, &col_end);
  const int row0 = vertical.lowest();
  ResampleRegion(image + static_cast<size_t>(row0) * stride + static_cast<size_t>(col_first) * channels, stride,
                 row0, col_first, col_end - col_first, channels, horizontal, vertical,
                 VerticalFirst(width, height, out_w, out_h), hflip != 0, out);
  return 0;
}

// uint8 HWC -> float32 CHW, chw[c][p] = hwc[p][c] * scale[c] + bias[c]: see NormalizeBody.
void mindcv_normalize(const uint8_t *hwc, int64_t pixels, int channels, const float *scale, const float *bias,
                      float *chw) {
  const bool avx2 = mindcv_ops::DetectIsa() != mindcv_ops::Isa::kBase;
  if (channels == 3)
    avx2 ? NormalizeAvx2<3>(hwc, pixels, scale, bias, chw) : NormalizeBody<3>(hwc, pixels, scale, bias, chw);
  else
    avx2 ? NormalizeAvx2<1>(hwc, pixels, scale, bias, chw) : NormalizeBody<1>(hwc, pixels, scale, bias, chw);
}

// Width, height and number of components of a JPEG (from its header). Returns 0 on success.
int mindcv_jpeg_header(const uint8_t *data, size_t size, int *width, int *height, int *components) {
  jpeg_decompress_struct cinfo;
  ErrorManager errors;
  cinfo.err = jpeg_std_error(&errors.base);
  errors.base.error_exit = ErrorExit;
  errors.base.emit_message = EmitMessage;
  jpeg_create_decompress(&cinfo);
  int status = 1;
  if (!setjmp(errors.escape)) {
    jpeg_mem_src(&cinfo, data, static_cast<unsigned long>(size));
    if (jpeg_read_header(&cinfo, TRUE) == JPEG_HEADER_OK) {
      *width = static_cast<int>(cinfo.image_width);
      *height = static_cast<int>(cinfo.image_height);
      *components = cinfo.num_components;
      status = 0;
    }
  }
  jpeg_destroy_decompress(&cinfo);
  return status;
}

// Mixup in place: image i of the batch becomes lam * x[i] + (1 - lam) * x[n - 1 - i], each product rounded to
// float32 before the sum.
void mindcv_mix_reversed(float *batch, int n, int64_t image_size, float lam) {
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
}

}  // extern "C"
