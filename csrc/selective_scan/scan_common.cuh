// Device helpers shared by the forward and backward kernels: dtype conversion, per-thread loads/stores of
// kScanItems consecutive steps, softplus, and the segmented warp scans of affine maps.
//
// Conversions use explicit intrinsics only: torch compiles CUDA with -D__CUDA_NO_HALF_CONVERSIONS__ and
// friends, which disable the implicit half/bf16 <-> float conversions.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "selective_scan.h"

namespace nnunetv2_cipa {
namespace scan {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr float kLog2e = 1.4426950408889634f;

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// 16-bit payload <-> float, for the vectorised paths (bit operations, no type punning through memory).
__device__ __forceinline__ float bits_to_float(unsigned short bits, __half) {
    return __half2float(__ushort_as_half(bits));
}
__device__ __forceinline__ float bits_to_float(unsigned short bits, __nv_bfloat16) {
    return __uint_as_float(static_cast<unsigned>(bits) << 16);
}
__device__ __forceinline__ unsigned short float_to_bits(float v, __half) {
    return __half_as_ushort(__float2half_rn(v));
}
__device__ __forceinline__ unsigned short float_to_bits(float v, __nv_bfloat16) {
    return __bfloat16_as_ushort(__float2bfloat16_rn(v));
}

__device__ __forceinline__ bool aligned16(const void* ptr) {
    return (reinterpret_cast<uintptr_t>(ptr) & 15u) == 0;
}

// Load the kItems consecutive elements ptr[0..kItems) as float; elements at index >= n_valid read as 0.
// A thread whose items are all valid and 16-byte aligned uses 16-byte loads.
template <int kItems>
__device__ __forceinline__ void load_items(const float* ptr, int n_valid, float (&out)[kItems]) {
    static_assert(kItems % 4 == 0, "kItems must be a multiple of 4");
    if (n_valid >= kItems && aligned16(ptr)) {
        const float4* vec = reinterpret_cast<const float4*>(ptr);
#pragma unroll
        for (int v = 0; v < kItems / 4; ++v) {
            const float4 x = __ldg(vec + v);
            out[4 * v + 0] = x.x;
            out[4 * v + 1] = x.y;
            out[4 * v + 2] = x.z;
            out[4 * v + 3] = x.w;
        }
    } else {
#pragma unroll
        for (int i = 0; i < kItems; ++i) out[i] = i < n_valid ? __ldg(ptr + i) : 0.f;
    }
}

template <int kItems, typename T>
__device__ __forceinline__ void load_items(const T* ptr, int n_valid, float (&out)[kItems]) {
    static_assert(sizeof(T) == 2 && kItems % 8 == 0, "16-bit types load 8 items per 16-byte vector");
    if (n_valid >= kItems && aligned16(ptr)) {
        const uint4* vec = reinterpret_cast<const uint4*>(ptr);
#pragma unroll
        for (int v = 0; v < kItems / 8; ++v) {
            const uint4 x = __ldg(vec + v);
            const unsigned words[4] = {x.x, x.y, x.z, x.w};
#pragma unroll
            for (int w = 0; w < 4; ++w) {
                out[8 * v + 2 * w] = bits_to_float(static_cast<unsigned short>(words[w] & 0xffffu), T());
                out[8 * v + 2 * w + 1] = bits_to_float(static_cast<unsigned short>(words[w] >> 16), T());
            }
        }
    } else {
#pragma unroll
        for (int i = 0; i < kItems; ++i) out[i] = i < n_valid ? to_float(ptr[i]) : 0.f;
    }
}

// Store the first n_valid of the kItems values to ptr[0..n_valid).
template <int kItems>
__device__ __forceinline__ void store_items(float* ptr, int n_valid, const float (&values)[kItems]) {
    if (n_valid >= kItems && aligned16(ptr)) {
        float4* vec = reinterpret_cast<float4*>(ptr);
#pragma unroll
        for (int v = 0; v < kItems / 4; ++v) {
            vec[v] = make_float4(values[4 * v], values[4 * v + 1], values[4 * v + 2], values[4 * v + 3]);
        }
    } else {
#pragma unroll
        for (int i = 0; i < kItems; ++i) {
            if (i < n_valid) ptr[i] = values[i];
        }
    }
}

template <int kItems, typename T>
__device__ __forceinline__ void store_items(T* ptr, int n_valid, const float (&values)[kItems]) {
    if (n_valid >= kItems && aligned16(ptr)) {
        uint4* vec = reinterpret_cast<uint4*>(ptr);
#pragma unroll
        for (int v = 0; v < kItems / 8; ++v) {
            unsigned words[4];
#pragma unroll
            for (int w = 0; w < 4; ++w) {
                const unsigned lo = float_to_bits(values[8 * v + 2 * w], T());
                const unsigned hi = float_to_bits(values[8 * v + 2 * w + 1], T());
                words[w] = lo | (hi << 16);
            }
            vec[v] = make_uint4(words[0], words[1], words[2], words[3]);
        }
    } else {
#pragma unroll
        for (int i = 0; i < kItems; ++i) {
            if (i < n_valid) ptr[i] = from_float<T>(values[i]);
        }
    }
}

// softplus(v) = log(1 + exp(v)), and v itself above 20 (where the two agree in fp32).
__device__ __forceinline__ float softplus(float v) { return v <= 20.f ? log1pf(__expf(v)) : v; }

// d softplus / dv = sigmoid(v); exactly 1 above the threshold, matching the forward.
__device__ __forceinline__ float softplus_grad(float v) { return v <= 20.f ? 1.f / (1.f + __expf(-v)) : 1.f; }

// Inclusive scan of affine maps h -> a h + b over the segments of `width` lanes of a warp, in lane
// order: afterwards lane j holds the composition of the maps of lanes seg_start..j (later applied last).
// Every lane of the warp must call it (full-mask shuffles).
__device__ __forceinline__ void segmented_scan_forward(float& a, float& b, int seg_lane, int width) {
    for (int offset = 1; offset < width; offset <<= 1) {
        const float prev_a = __shfl_up_sync(kFullMask, a, offset, width);
        const float prev_b = __shfl_up_sync(kFullMask, b, offset, width);
        if (seg_lane >= offset) {
            b = fmaf(a, prev_b, b);
            a = a * prev_a;
        }
    }
}

// Same in reverse lane order: afterwards lane j holds the composition of the maps of lanes j..seg_end,
// where the map of lane j+1 is applied first (the adjoint recurrence runs from the end of the sequence).
__device__ __forceinline__ void segmented_scan_reverse(float& a, float& b, int seg_lane, int width) {
    for (int offset = 1; offset < width; offset <<= 1) {
        const float next_a = __shfl_down_sync(kFullMask, a, offset, width);
        const float next_b = __shfl_down_sync(kFullMask, b, offset, width);
        if (seg_lane + offset < width) {
            b = fmaf(a, next_b, b);
            a = a * next_a;
        }
    }
}

// Sum of v over the lanes of a segment of `width` lanes (result valid in every lane of the segment).
__device__ __forceinline__ float segment_sum(float v, int width) {
    for (int offset = 1; offset < width; offset <<= 1) v += __shfl_xor_sync(kFullMask, v, offset);
    return v;
}

// Where one thread block's rows and steps sit; identical for the forward and the backward kernel.
struct RowLayout {
    int b;           // batch index
    int d;           // channel (clamped to dim - 1 for the padding rows of the last block)
    bool row_valid;  // false for padding rows: they compute but never write
    int seg_lane;    // lane inside the sequence's segment, 0..lanes-1
    int row_in_warp; // segment index inside the warp
    int warp_first_d;// channel of the warp's first segment (unclamped)

    __device__ __forceinline__ RowLayout(const ScanFwdParams& p) {
        const int rows_per_block = kScanThreads >> p.lanes_log2;
        const int row_block = static_cast<int>(blockIdx.x % static_cast<unsigned>(p.row_blocks));
        b = static_cast<int>(blockIdx.x / static_cast<unsigned>(p.row_blocks));
        const int row_in_block = static_cast<int>(threadIdx.x) >> p.lanes_log2;
        const int d_raw = row_block * rows_per_block + row_in_block;
        row_valid = d_raw < p.dim;
        d = row_valid ? d_raw : p.dim - 1;
        seg_lane = static_cast<int>(threadIdx.x) & (p.lanes - 1);
        const int lane = static_cast<int>(threadIdx.x) & 31;
        row_in_warp = lane >> p.lanes_log2;
        warp_first_d = d_raw - row_in_warp;
    }
};

}  // namespace scan
}  // namespace nnunetv2_cipa
