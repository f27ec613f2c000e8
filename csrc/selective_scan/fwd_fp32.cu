// Forward kernel instances for fp32 inputs (one translation unit per dtype so builds run in parallel).
#include "scan_fwd.cuh"

namespace nnunetv2_cipa {

cudaError_t selective_scan_fwd_fp32(const ScanFwdParams& params, cudaStream_t stream) {
    return scan::launch_fwd<float, float>(params, stream);
}

}  // namespace nnunetv2_cipa
