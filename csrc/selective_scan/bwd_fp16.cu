// Backward kernel instances for fp16 inputs (one translation unit per dtype so builds run in parallel).
#include "scan_bwd.cuh"

namespace nnunetv2_cipa {

cudaError_t selective_scan_bwd_fp16(const ScanBwdParams& params, cudaStream_t stream) {
    return params.out_float ? scan::launch_bwd<__half, float>(params, stream)
                            : scan::launch_bwd<__half, __half>(params, stream);
}

}  // namespace nnunetv2_cipa
