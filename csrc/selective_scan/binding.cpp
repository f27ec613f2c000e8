// PyTorch binding of the selective-scan kernels: checks, allocation, dtype dispatch. Nothing else.
//
// Only torch/extension.h and the two c10/cuda headers are included (never ATen/cuda/CUDAContext.h, which
// pulls cuBLAS/cuSPARSE headers that minimal CUDA toolkits lack); the kernels see plain structs
// (selective_scan.h).
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include <climits>
#include <optional>
#include <string>
#include <vector>

#include "selective_scan.h"

namespace {

using nnunetv2_cipa::ScanBwdParams;
using nnunetv2_cipa::ScanFwdParams;

void check_same_device(const at::Tensor& t, const at::Tensor& u, const char* name) {
    TORCH_CHECK(t.is_cuda(), "selective_scan_cuda: ", name, " must be a CUDA tensor");
    TORCH_CHECK(t.device() == u.device(), "selective_scan_cuda: ", name, " must be on the device of u (",
                u.device(), "), got ", t.device());
}

void check_shape(const at::Tensor& t, at::IntArrayRef expected, const char* name) {
    TORCH_CHECK(t.sizes() == expected, "selective_scan_cuda: ", name, " must have shape ", expected, ", got ",
                t.sizes());
}

void check_weight(const std::optional<at::Tensor>& t, const at::Tensor& u, int64_t dim, const char* name) {
    if (!t.has_value()) return;
    check_same_device(*t, u, name);
    TORCH_CHECK(t->scalar_type() == at::kFloat, "selective_scan_cuda: ", name, " must be float32, got ",
                t->scalar_type());
    check_shape(*t, {dim}, name);
}

const float* optional_ptr(const std::optional<at::Tensor>& t) {
    return t.has_value() ? t->data_ptr<float>() : nullptr;
}

// Shape/dtype checks shared by fwd and bwd; fills the size fields of params.
void fill_sizes(ScanFwdParams& p, const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                const at::Tensor& B, const at::Tensor& C, const std::optional<at::Tensor>& D,
                const std::optional<at::Tensor>& delta_bias, bool delta_softplus) {
    TORCH_CHECK(u.is_cuda(), "selective_scan_cuda: u must be a CUDA tensor");
    const auto dtype = u.scalar_type();
    TORCH_CHECK(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16,
                "selective_scan_cuda: u must be float32, float16 or bfloat16, got ", dtype);
    TORCH_CHECK(u.dim() == 3, "selective_scan_cuda: u must have shape (batch, K*D, L), got ", u.sizes());
    const int64_t batch = u.size(0), dim = u.size(1), seqlen = u.size(2);
    TORCH_CHECK(dim >= 1 && seqlen >= 1, "selective_scan_cuda: u must have K*D >= 1 and L >= 1, got ", u.sizes());
    TORCH_CHECK(A.dim() == 2 && A.size(0) == dim, "selective_scan_cuda: A must have shape (", dim, ", N), got ",
                A.sizes());
    const int64_t dstate = A.size(1);
    TORCH_CHECK(dstate >= 1 && dstate <= nnunetv2_cipa::kScanMaxState, "selective_scan_cuda: N = ", dstate,
                " is outside the compiled range 1..", nnunetv2_cipa::kScanMaxState);
    TORCH_CHECK(A.scalar_type() == at::kFloat, "selective_scan_cuda: A must be float32, got ", A.scalar_type());
    TORCH_CHECK(B.dim() == 4, "selective_scan_cuda: B must have shape (batch, K, N, L), got ", B.sizes());
    const int64_t groups = B.size(1);
    TORCH_CHECK(groups >= 1 && dim % groups == 0, "selective_scan_cuda: K = ", groups,
                " groups of B must divide K*D = ", dim);
    check_same_device(delta, u, "delta");
    check_same_device(A, u, "A");
    check_same_device(B, u, "B");
    check_same_device(C, u, "C");
    check_shape(delta, u.sizes(), "delta");
    check_shape(B, {batch, groups, dstate, seqlen}, "B");
    check_shape(C, {batch, groups, dstate, seqlen}, "C");
    for (const auto& [t, name] : {std::pair<const at::Tensor&, const char*>{delta, "delta"}, {B, "B"}, {C, "C"}}) {
        TORCH_CHECK(t.scalar_type() == dtype, "selective_scan_cuda: ", name, " must have the dtype of u (", dtype,
                    "), got ", t.scalar_type());
    }
    check_weight(D, u, dim, "D");
    check_weight(delta_bias, u, dim, "delta_bias");
    TORCH_CHECK(seqlen <= INT_MAX / 2 && dim <= INT_MAX / 2 && batch <= INT_MAX,
                "selective_scan_cuda: sizes too large for 32-bit step/channel indices: ", u.sizes());

    p.batch = static_cast<int>(batch);
    p.dim = static_cast<int>(dim);
    p.seqlen = static_cast<int>(seqlen);
    p.dstate = static_cast<int>(dstate);
    p.n_groups = static_cast<int>(groups);
    p.dim_per_group = static_cast<int>(dim / groups);
    p.lanes = nnunetv2_cipa::scan_lanes_for_length(seqlen);
    p.lanes_log2 = nnunetv2_cipa::scan_log2(p.lanes);
    p.chunk_len = p.lanes * nnunetv2_cipa::kScanItems;
    p.n_chunks = static_cast<int>((seqlen + p.chunk_len - 1) / p.chunk_len);
    const int rows_per_block = nnunetv2_cipa::kScanThreads / p.lanes;
    p.row_blocks = static_cast<int>((dim + rows_per_block - 1) / rows_per_block);
    TORCH_CHECK(static_cast<int64_t>(p.row_blocks) * batch <= INT_MAX, "selective_scan_cuda: grid too large for ",
                u.sizes());
    p.delta_softplus = delta_softplus;
}

void check_launch(cudaError_t status, const char* what) {
    TORCH_CHECK(status == cudaSuccess, "selective_scan_cuda: ", what, " launch failed: ", cudaGetErrorString(status));
}

std::vector<at::Tensor> fwd(const at::Tensor& u_in, const at::Tensor& delta_in, const at::Tensor& A_in,
                            const at::Tensor& B_in, const at::Tensor& C_in, const std::optional<at::Tensor>& D_in,
                            const std::optional<at::Tensor>& delta_bias_in, bool delta_softplus, bool out_float) {
    ScanFwdParams p;
    fill_sizes(p, u_in, delta_in, A_in, B_in, C_in, D_in, delta_bias_in, delta_softplus);
    const c10::cuda::CUDAGuard device_guard(u_in.device());
    const at::Tensor u = u_in.contiguous(), delta = delta_in.contiguous(), A = A_in.contiguous();
    const at::Tensor B = B_in.contiguous(), C = C_in.contiguous();
    std::optional<at::Tensor> D, delta_bias;
    if (D_in.has_value()) D = D_in->contiguous();
    if (delta_bias_in.has_value()) delta_bias = delta_bias_in->contiguous();

    const auto in_dtype = u.scalar_type();
    p.out_float = out_float || in_dtype == at::kFloat;
    at::Tensor out = at::empty(u.sizes(), u.options().dtype(p.out_float ? at::kFloat : in_dtype));
    at::Tensor ckpt = at::empty({u.size(0), u.size(1), p.n_chunks, p.dstate}, u.options().dtype(at::kFloat));
    if (u.size(0) == 0) return {out, ckpt};

    p.u = u.data_ptr();
    p.delta = delta.data_ptr();
    p.A = A.data_ptr<float>();
    p.B = B.data_ptr();
    p.C = C.data_ptr();
    p.D = optional_ptr(D);
    p.delta_bias = optional_ptr(delta_bias);
    p.out = out.data_ptr();
    p.ckpt = ckpt.data_ptr<float>();

    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
    cudaError_t status;
    if (in_dtype == at::kFloat) {
        status = nnunetv2_cipa::selective_scan_fwd_fp32(p, stream);
    } else if (in_dtype == at::kHalf) {
        status = nnunetv2_cipa::selective_scan_fwd_fp16(p, stream);
    } else {
        status = nnunetv2_cipa::selective_scan_fwd_bf16(p, stream);
    }
    check_launch(status, "forward");
    return {out, ckpt};
}

std::vector<at::Tensor> bwd(const at::Tensor& u_in, const at::Tensor& delta_in, const at::Tensor& A_in,
                            const at::Tensor& B_in, const at::Tensor& C_in, const std::optional<at::Tensor>& D_in,
                            const std::optional<at::Tensor>& delta_bias_in, const at::Tensor& dout_in,
                            const at::Tensor& ckpt_in, const std::optional<at::Tensor>& dlast_state_in,
                            bool delta_softplus) {
    ScanBwdParams p;
    fill_sizes(p, u_in, delta_in, A_in, B_in, C_in, D_in, delta_bias_in, delta_softplus);
    const auto in_dtype = u_in.scalar_type();
    check_same_device(dout_in, u_in, "dout");
    check_shape(dout_in, u_in.sizes(), "dout");
    TORCH_CHECK(dout_in.scalar_type() == in_dtype || dout_in.scalar_type() == at::kFloat,
                "selective_scan_cuda: dout must have the dtype of u or float32, got ", dout_in.scalar_type());
    check_same_device(ckpt_in, u_in, "checkpoints");
    TORCH_CHECK(ckpt_in.scalar_type() == at::kFloat, "selective_scan_cuda: checkpoints must be float32");
    check_shape(ckpt_in, {u_in.size(0), u_in.size(1), p.n_chunks, p.dstate}, "checkpoints");
    if (dlast_state_in.has_value()) {
        check_same_device(*dlast_state_in, u_in, "dlast_state");
        TORCH_CHECK(dlast_state_in->scalar_type() == at::kFloat, "selective_scan_cuda: dlast_state must be float32, got ",
                    dlast_state_in->scalar_type());
        check_shape(*dlast_state_in, {u_in.size(0), u_in.size(1), p.dstate}, "dlast_state");
    }
    p.out_float = dout_in.scalar_type() == at::kFloat;

    const c10::cuda::CUDAGuard device_guard(u_in.device());
    const at::Tensor u = u_in.contiguous(), delta = delta_in.contiguous(), A = A_in.contiguous();
    const at::Tensor B = B_in.contiguous(), C = C_in.contiguous();
    const at::Tensor dout = dout_in.contiguous(), ckpt = ckpt_in.contiguous();
    std::optional<at::Tensor> dlast_state;
    if (dlast_state_in.has_value()) dlast_state = dlast_state_in->contiguous();
    std::optional<at::Tensor> D, delta_bias;
    if (D_in.has_value()) D = D_in->contiguous();
    if (delta_bias_in.has_value()) delta_bias = delta_bias_in->contiguous();

    const auto f32 = u.options().dtype(at::kFloat);
    at::Tensor du = at::empty_like(u);
    at::Tensor ddelta = at::empty_like(delta);
    at::Tensor dA = at::zeros(A.sizes(), f32);
    at::Tensor dB = at::zeros(B.sizes(), f32);
    at::Tensor dC = at::zeros(C.sizes(), f32);
    at::Tensor dD = D.has_value() ? at::zeros(D->sizes(), f32) : at::Tensor();
    at::Tensor ddelta_bias = delta_bias.has_value() ? at::zeros(delta_bias->sizes(), f32) : at::Tensor();

    if (u.size(0) > 0) {
        p.u = u.data_ptr();
        p.delta = delta.data_ptr();
        p.A = A.data_ptr<float>();
        p.B = B.data_ptr();
        p.C = C.data_ptr();
        p.D = optional_ptr(D);
        p.delta_bias = optional_ptr(delta_bias);
        p.dout = dout.data_ptr();
        p.ckpt_in = ckpt.data_ptr<float>();
        p.dlast_state = optional_ptr(dlast_state);
        p.du = du.data_ptr();
        p.ddelta = ddelta.data_ptr();
        p.dA = dA.data_ptr<float>();
        p.dB = dB.data_ptr<float>();
        p.dC = dC.data_ptr<float>();
        p.dD = dD.defined() ? dD.data_ptr<float>() : nullptr;
        p.ddelta_bias = ddelta_bias.defined() ? ddelta_bias.data_ptr<float>() : nullptr;

        const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
        cudaError_t status;
        if (in_dtype == at::kFloat) {
            status = nnunetv2_cipa::selective_scan_bwd_fp32(p, stream);
        } else if (in_dtype == at::kHalf) {
            status = nnunetv2_cipa::selective_scan_bwd_fp16(p, stream);
        } else {
            status = nnunetv2_cipa::selective_scan_bwd_bf16(p, stream);
        }
        check_launch(status, "backward");
    }
    // dB/dC were accumulated in fp32 (atomics over a group's channels); hand them back in B's dtype.
    return {du, ddelta, dA, dB.to(B.scalar_type()), dC.to(C.scalar_type()), dD, ddelta_bias};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.doc() = "nnunetv2_cipa selective scan (VMamba grouped contract), forward and backward CUDA kernels";
    m.def("fwd", &fwd, "Selective scan forward -> [out, checkpoints (batch, K*D, n_chunks, N) fp32]",
          pybind11::arg("u"), pybind11::arg("delta"), pybind11::arg("A"), pybind11::arg("B"), pybind11::arg("C"),
          pybind11::arg("D"), pybind11::arg("delta_bias"), pybind11::arg("delta_softplus"),
          pybind11::arg("out_float"));
    m.def("bwd", &bwd, "Selective scan backward -> [du, ddelta, dA, dB, dC, dD, ddelta_bias]", pybind11::arg("u"),
          pybind11::arg("delta"), pybind11::arg("A"), pybind11::arg("B"), pybind11::arg("C"), pybind11::arg("D"),
          pybind11::arg("delta_bias"), pybind11::arg("dout"), pybind11::arg("checkpoints"),
          pybind11::arg("dlast_state"), pybind11::arg("delta_softplus"));
    m.attr("max_dstate") = nnunetv2_cipa::kScanMaxState;
    m.attr("chunk_items") = nnunetv2_cipa::kScanItems;
}
