// Backward kernel instances for bf16 inputs (one translation unit per dtype so builds run in parallel).
#include "scan_bwd.cuh"

namespace nnunetv2_cipa {

cudaError_t selective_scan_bwd_bf16(const ScanBwdParams& params, cudaStream_t stream) {
    return params.out_float ? scan::launch_bwd<__nv_bfloat16, float>(params, stream)
                            : scan::launch_bwd<__nv_bfloat16, __nv_bfloat16>(params, stream);
}

}  // namespace nnunetv2_cipa
