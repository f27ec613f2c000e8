// Backward kernel instances for fp32 inputs (one translation unit per dtype so builds run in parallel).
#include "scan_bwd.cuh"

namespace nnunetv2_cipa {

cudaError_t selective_scan_bwd_fp32(const ScanBwdParams& params, cudaStream_t stream) {
    return scan::launch_bwd<float, float>(params, stream);
}

}  // namespace nnunetv2_cipa
