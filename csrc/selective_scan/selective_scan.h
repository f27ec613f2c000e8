// Selective-scan kernels of nnunetv2_cipa: the torch-free interface between the binding and the kernels.
//
// Why torch-free: the kernel translation units must compile with nvcc alone (seconds, and on a CPU-only
// CI machine whose torch wheel lacks the CUDA libraries), so they only see this plain parameter struct
// with raw pointers. The binding (binding.cpp) owns all tensor checks and allocations.
//
// Contract (VMamba's grouped "oflex" layout; every tensor contiguous):
//   u, delta   (batch, dim, L)          input dtype (fp32 / fp16 / bf16)
//   A          (dim, N)                 fp32
//   B, C       (batch, groups, N, L)    input dtype; channel d reads group d / (dim / groups)
//   D, bias    (dim,)                   fp32, optional (nullptr)
//   out        (batch, dim, L)          input dtype, or fp32 when out_float
//   ckpt       (batch, dim, n_chunks, N) fp32: the state h at the END of every chunk of chunk_len steps
//                                       (the last entry is the final state).
// Maths: dt = softplus(delta + bias) (softplus optional), h_t = exp(dt A) h_{t-1} + dt u B_t, y = C.h + D u.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace nnunetv2_cipa {

// Time steps owned by one thread inside a chunk (registers), and threads per block.
constexpr int kScanItems = 8;
constexpr int kScanThreads = 128;
// Largest state size with a compiled kernel (template instances for N <= 1, 4, 16).
constexpr int kScanMaxState = 16;

// One sequence (batch b, channel d) is scanned by `lanes` consecutive threads of a warp (a power of two,
// 1..32), each owning kScanItems consecutive steps: one chunk covers lanes * kScanItems steps and the
// chunks are walked in order with the state carried in registers. Short sequences use few lanes so that
// a block holds many channels (the DCIM shapes: batch 1024, L = 16) and all its threads have work.
inline int scan_lanes_for_length(int64_t seqlen) {
    const int64_t needed = (seqlen + kScanItems - 1) / kScanItems;
    int lanes = 1;
    while (lanes < needed && lanes < 32) lanes <<= 1;
    return lanes;
}

inline int scan_log2(int power_of_two) {
    int log2 = 0;
    while ((1 << log2) < power_of_two) ++log2;
    return log2;
}

struct ScanFwdParams {
    int batch = 0, dim = 0, seqlen = 0, dstate = 0, n_groups = 0, dim_per_group = 0;
    int lanes = 1, lanes_log2 = 0;    // threads per sequence and its log2
    int chunk_len = 0, n_chunks = 0;  // chunk_len = lanes * kScanItems, n_chunks = ceil(L / chunk_len)
    int row_blocks = 0;               // ceil(dim / rows per block); grid = batch * row_blocks blocks
    bool delta_softplus = false;
    bool out_float = false;           // out is fp32 whatever the input dtype

    const void* u = nullptr;      // input dtype
    const void* delta = nullptr;  // input dtype
    const float* A = nullptr;
    const void* B = nullptr;      // input dtype
    const void* C = nullptr;      // input dtype
    const float* D = nullptr;           // optional
    const float* delta_bias = nullptr;  // optional
    void* out = nullptr;          // input dtype or fp32 (out_float)
    float* ckpt = nullptr;        // written by the forward, read by the backward
};

struct ScanBwdParams : ScanFwdParams {
    const void* dout = nullptr;    // dtype of out
    const float* ckpt_in = nullptr;  // the forward's checkpoints
    const float* dlast_state = nullptr;  // optional (batch, dim, N) fp32: gradient of the final state
    void* du = nullptr;            // input dtype, fully written
    void* ddelta = nullptr;        // input dtype, fully written
    float* dA = nullptr;           // (dim, N), zero-initialised, accumulated with atomics
    float* dB = nullptr;           // (batch, groups, N, L) fp32, zero-initialised, atomics over a group's channels
    float* dC = nullptr;           // same
    float* dD = nullptr;           // optional (dim,), zero-initialised
    float* ddelta_bias = nullptr;  // optional (dim,), zero-initialised
};

// Launchers, one per input dtype (the .cu files); they pick the N specialisation and the output dtype.
// They return cudaErrorInvalidValue for N outside 1..kScanMaxState, else the launch status.
cudaError_t selective_scan_fwd_fp32(const ScanFwdParams& params, cudaStream_t stream);
cudaError_t selective_scan_fwd_fp16(const ScanFwdParams& params, cudaStream_t stream);
cudaError_t selective_scan_fwd_bf16(const ScanFwdParams& params, cudaStream_t stream);
cudaError_t selective_scan_bwd_fp32(const ScanBwdParams& params, cudaStream_t stream);
cudaError_t selective_scan_bwd_fp16(const ScanBwdParams& params, cudaStream_t stream);
cudaError_t selective_scan_bwd_bf16(const ScanBwdParams& params, cudaStream_t stream);

}  // namespace nnunetv2_cipa
