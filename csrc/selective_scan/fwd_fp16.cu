// Forward kernel instances for fp16 inputs (one translation unit per dtype so builds run in parallel).
#include "scan_fwd.cuh"

namespace nnunetv2_cipa {

cudaError_t selective_scan_fwd_fp16(const ScanFwdParams& params, cudaStream_t stream) {
    return params.out_float ? scan::launch_fwd<__half, float>(params, stream)
                            : scan::launch_fwd<__half, __half>(params, stream);
}

}  // namespace nnunetv2_cipa
