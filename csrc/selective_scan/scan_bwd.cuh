// Backward selective-scan kernel: recomputation from the forward's chunk checkpoints plus a reverse scan
// for the adjoint.
//
// Same thread layout as the forward (scan_fwd.cuh). Chunks are walked from last to first; for every state:
//   1. recompute h inside the chunk: the same segmented scan as the forward, seeded with the checkpoint of
//      the previous chunk (so no per-step state is ever stored);
//   2. adjoint gh_t = gy_t C_t + a_{t+1} gh_{t+1}, written as the reverse affine recurrence of
//      g_t = a_t gh_t:  g_t = a_t g_{t+1} + a_t gy_t C_t, whose map at step t only needs step t's values
//      (no shift across threads). The segment scans it in reverse lane order; the chunk-to-chunk carry
//      is the g of the chunk's first step, and past the end of the sequence it is the gradient of the final
//      state (return_last_state; zero when unused);
//   3. sweep the thread's items backwards and accumulate (with ah = a_t h_{t-1}, taken from the
//      recomputed states, not from h_t - x_t, which would cancel):
//        du += gh dt B,  ddt += gh (ah A + u B),  dA += gh dt ah,  dB_t = gh dt u,  dC_t = gy h.
// Reductions: dB/dC sum over the channels of a group, so they go to fp32 buffers with atomicAdd; when
// all segments of a warp belong to the same group they are first summed across the warp's segments with
// shuffles (one atomic per step instead of one per channel; this is what makes the short-sequence DCIM
// shapes cheap). dA, dD and d(delta_bias) are summed over the segment with shuffles, then one atomic per
// channel and block. Summation order of the atomics is not deterministic (bitwise repeatability is not
// promised; values agree to fp32 rounding).
#pragma once

#include "scan_common.cuh"

namespace nnunetv2_cipa {
namespace scan {

template <int kN, typename in_t, typename out_t>
__global__ void __launch_bounds__(kScanThreads) selective_scan_bwd_kernel(const ScanBwdParams p) {
    constexpr int kItems = kScanItems;
    const RowLayout rl(p);
    const int L = p.seqlen;
    const int width = p.lanes;
    const int group = rl.d / p.dim_per_group;

    // Warp-level reduction of dB/dC is possible when every segment of the warp reads the same group.
    const int segments_per_warp = 32 >> p.lanes_log2;
    const int warp_last_d = min(rl.warp_first_d + segments_per_warp - 1, p.dim - 1);
    const bool warp_reduce = segments_per_warp > 1 && rl.warp_first_d < p.dim &&
                             rl.warp_first_d / p.dim_per_group == warp_last_d / p.dim_per_group;
    const bool issue_group_atomics = warp_reduce ? rl.row_in_warp == 0 : rl.row_valid;

    const int64_t row_offset = (static_cast<int64_t>(rl.b) * p.dim + rl.d) * L;
    const in_t* u_row = static_cast<const in_t*>(p.u) + row_offset;
    const in_t* delta_row = static_cast<const in_t*>(p.delta) + row_offset;
    const out_t* dout_row = static_cast<const out_t*>(p.dout) + row_offset;
    in_t* du_row = static_cast<in_t*>(p.du) + row_offset;
    in_t* ddelta_row = static_cast<in_t*>(p.ddelta) + row_offset;
    const int64_t group_offset = (static_cast<int64_t>(rl.b) * p.n_groups + group) * p.dstate * L;
    const in_t* B_group = static_cast<const in_t*>(p.B) + group_offset;
    const in_t* C_group = static_cast<const in_t*>(p.C) + group_offset;
    float* dB_group = p.dB + group_offset;
    float* dC_group = p.dC + group_offset;
    const float* ckpt_row = p.ckpt_in + (static_cast<int64_t>(rl.b) * p.dim + rl.d) * p.n_chunks * p.dstate;

    float A_val[kN];
#pragma unroll
    for (int n = 0; n < kN; ++n) A_val[n] = n < p.dstate ? p.A[rl.d * p.dstate + n] : 0.f;
    const float D_val = p.D != nullptr ? p.D[rl.d] : 0.f;
    const float bias = p.delta_bias != nullptr ? p.delta_bias[rl.d] : 0.f;
    // Padding rows read nothing of their own (their dout is zero), so all their contributions vanish.
    const int row_items = rl.row_valid ? kItems : 0;

    // g_carry = a_{t+1} gh_{t+1} for the step after the current chunk. Past the end of the sequence it is
    // the gradient of the final state (return_last_state), which enters gh_{L-1} exactly like g_L would.
    const float* dlast_row = p.dlast_state != nullptr && rl.row_valid
                                 ? p.dlast_state + (static_cast<int64_t>(rl.b) * p.dim + rl.d) * p.dstate
                                 : nullptr;
    float g_carry[kN], dA_acc[kN];
#pragma unroll
    for (int n = 0; n < kN; ++n) {
        g_carry[n] = dlast_row != nullptr && n < p.dstate ? dlast_row[n] : 0.f;
        dA_acc[n] = 0.f;
    }
    float dD_acc = 0.f, dbias_acc = 0.f;

    for (int chunk = p.n_chunks - 1; chunk >= 0; --chunk) {
        const int t0 = chunk * p.chunk_len + rl.seg_lane * kItems;
        const int n_valid = max(0, min(kItems, L - t0));
        const int n_row = min(n_valid, row_items);

        float u[kItems], dt[kItems], gy[kItems];
        load_items<kItems>(u_row + t0, n_row, u);
        load_items<kItems>(delta_row + t0, n_row, dt);
        load_items<kItems>(dout_row + t0, n_row, gy);
        float du[kItems], ddt[kItems], dt_scale[kItems];  // dt_scale = d dt / d delta
#pragma unroll
        for (int i = 0; i < kItems; ++i) {
            const float v = dt[i] + bias;
            dt[i] = i < n_valid ? (p.delta_softplus ? softplus(v) : v) : 0.f;  // identity map past the end
            dt_scale[i] = p.delta_softplus ? softplus_grad(v) : 1.f;
            du[i] = D_val * gy[i];
            ddt[i] = 0.f;
            dD_acc = fmaf(gy[i], u[i], dD_acc);
        }

#pragma unroll
        for (int n = 0; n < kN; ++n) {
            if (n < p.dstate) {
                float Bv[kItems], Cv[kItems];
                load_items<kItems>(B_group + static_cast<int64_t>(n) * L + t0, n_valid, Bv);
                load_items<kItems>(C_group + static_cast<int64_t>(n) * L + t0, n_valid, Cv);
                const float h_start = chunk > 0 ? ckpt_row[(chunk - 1) * p.dstate + n] : 0.f;
                const float A_log2 = A_val[n] * kLog2e;

                // 1. Recompute the states of this thread's items.
                float a[kItems], h[kItems];
                float agg_a = 1.f, agg_b = 0.f;
#pragma unroll
                for (int i = 0; i < kItems; ++i) {
                    a[i] = exp2f(dt[i] * A_log2);
                    agg_b = fmaf(a[i], agg_b, dt[i] * u[i] * Bv[i]);
                    agg_a *= a[i];
                }
                segmented_scan_forward(agg_a, agg_b, rl.seg_lane, width);
                float prev_a = __shfl_up_sync(kFullMask, agg_a, 1, width);
                float prev_b = __shfl_up_sync(kFullMask, agg_b, 1, width);
                if (rl.seg_lane == 0) {
                    prev_a = 1.f;
                    prev_b = 0.f;
                }
                const float h_in = fmaf(prev_a, h_start, prev_b);
                float h_run = h_in;
#pragma unroll
                for (int i = 0; i < kItems; ++i) {
                    h_run = fmaf(a[i], h_run, dt[i] * u[i] * Bv[i]);
                    h[i] = h_run;
                }

                // 2. Adjoint: map of item i is g -> a_i g + a_i gy_i C_i; compose this thread's items.
                float rev_a = 1.f, rev_b = 0.f;
#pragma unroll
                for (int i = kItems - 1; i >= 0; --i) {
                    rev_b = a[i] * fmaf(gy[i], Cv[i], rev_b);
                    rev_a *= a[i];
                }
                segmented_scan_reverse(rev_a, rev_b, rl.seg_lane, width);
                float next_a = __shfl_down_sync(kFullMask, rev_a, 1, width);
                float next_b = __shfl_down_sync(kFullMask, rev_b, 1, width);
                if (rl.seg_lane == width - 1) {
                    next_a = 1.f;
                    next_b = 0.f;
                }
                float g = fmaf(next_a, g_carry[n], next_b);  // a_{t+1} gh_{t+1} for this thread's last item
                const float seg_a = __shfl_sync(kFullMask, rev_a, 0, width);
                const float seg_b = __shfl_sync(kFullMask, rev_b, 0, width);
                g_carry[n] = fmaf(seg_a, g_carry[n], seg_b);

                // 3. Backward sweep over the items.
                float dB_val[kItems], dC_val[kItems];
#pragma unroll
                for (int i = kItems - 1; i >= 0; --i) {
                    const float gh = fmaf(gy[i], Cv[i], g);
                    const float h_prev = i > 0 ? h[i - 1] : h_in;
                    const float ah = a[i] * h_prev;  // a_t h_{t-1}
                    const float gh_dt = gh * dt[i];
                    du[i] = fmaf(gh_dt, Bv[i], du[i]);
                    ddt[i] = fmaf(gh, fmaf(ah, A_val[n], u[i] * Bv[i]), ddt[i]);
                    dA_acc[n] = fmaf(gh_dt, ah, dA_acc[n]);
                    dB_val[i] = gh_dt * u[i];
                    dC_val[i] = gy[i] * h[i];
                    g = a[i] * gh;
                }
                if (warp_reduce) {
                    for (int offset = width; offset < 32; offset <<= 1) {
#pragma unroll
                        for (int i = 0; i < kItems; ++i) {
                            dB_val[i] += __shfl_xor_sync(kFullMask, dB_val[i], offset);
                            dC_val[i] += __shfl_xor_sync(kFullMask, dC_val[i], offset);
                        }
                    }
                }
                if (issue_group_atomics) {
                    float* dB_ptr = dB_group + static_cast<int64_t>(n) * L + t0;
                    float* dC_ptr = dC_group + static_cast<int64_t>(n) * L + t0;
#pragma unroll
                    for (int i = 0; i < kItems; ++i) {
                        if (i < n_valid) {
                            atomicAdd(dB_ptr + i, dB_val[i]);
                            atomicAdd(dC_ptr + i, dC_val[i]);
                        }
                    }
                }
            }
        }

        float ddelta[kItems];
#pragma unroll
        for (int i = 0; i < kItems; ++i) {
            ddelta[i] = ddt[i] * dt_scale[i];
            if (i < n_row) dbias_acc += ddelta[i];
        }
        if (rl.row_valid) {
            store_items<kItems>(du_row + t0, n_valid, du);
            store_items<kItems>(ddelta_row + t0, n_valid, ddelta);
        }
    }

    // Per-channel sums: over the segment's lanes, then one atomic per channel (other blocks: other batches).
#pragma unroll
    for (int n = 0; n < kN; ++n) dA_acc[n] = segment_sum(dA_acc[n], width);
    dD_acc = segment_sum(dD_acc, width);
    dbias_acc = segment_sum(dbias_acc, width);
    if (rl.row_valid && rl.seg_lane == 0) {
#pragma unroll
        for (int n = 0; n < kN; ++n) {
            if (n < p.dstate) atomicAdd(p.dA + rl.d * p.dstate + n, dA_acc[n]);
        }
        if (p.dD != nullptr) atomicAdd(p.dD + rl.d, dD_acc);
        if (p.ddelta_bias != nullptr) atomicAdd(p.ddelta_bias + rl.d, dbias_acc);
    }
}

// The launchers use the <<<>>> syntax, which only nvcc parses; the CPU emulation of the kernels
// (tests/ops/scan_host_emulator.cpp) compiles the kernel above with a host compiler and skips them.
#ifndef NNUNETV2_CIPA_SCAN_HOST_EMULATION
template <int kN, typename in_t, typename out_t>
cudaError_t launch_bwd_n(const ScanBwdParams& p, cudaStream_t stream) {
    const unsigned blocks = static_cast<unsigned>(p.batch) * static_cast<unsigned>(p.row_blocks);
    selective_scan_bwd_kernel<kN, in_t, out_t><<<blocks, kScanThreads, 0, stream>>>(p);
    return cudaGetLastError();
}

template <typename in_t, typename out_t>
cudaError_t launch_bwd(const ScanBwdParams& p, cudaStream_t stream) {
    if (p.dstate < 1 || p.dstate > kScanMaxState) return cudaErrorInvalidValue;
    if (p.dstate == 1) return launch_bwd_n<1, in_t, out_t>(p, stream);
    if (p.dstate <= 4) return launch_bwd_n<4, in_t, out_t>(p, stream);
    return launch_bwd_n<16, in_t, out_t>(p, stream);
}

#endif  // NNUNETV2_CIPA_SCAN_HOST_EMULATION

}  // namespace scan
}  // namespace nnunetv2_cipa
