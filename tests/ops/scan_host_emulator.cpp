// CPU emulation of the selective-scan CUDA kernels: the real kernel source, compiled by a host compiler.
//
// Why: no GPU is available on CI, yet the kernels' indexing, masked and vectorised loads/stores, 16-bit
// conversions, warp shuffles with segment widths, padding rows, the warp-level dB/dC reduction and the
// atomics can all be exercised on the CPU. Every thread of a block runs as a std::thread; a warp's 32
// threads meet at a barrier for every shuffle (so a shuffle reached by only part of a warp deadlocks, which
// the Python driver turns into a failure through its timeout). What it cannot show: GPU memory-model or
// timing effects, and the device math library (exp2f/log1pf here are the host's, __expf is expf).
//
// Usage: scan_host_emulator <folder>. The folder holds meta.txt
//   "batch dim seqlen dstate groups dtype(0 fp32, 1 fp16, 2 bf16) out_float softplus has_D has_bias has_dlast"
// and raw little-endian arrays u, delta, B, C, dout (input dtype; dout fp32 when out_float), A, D, bias,
// dlast (fp32). It writes out, ckpt, du, ddelta, dA, dB, dC, dD, dbias (.bin, kernel output dtypes;
// dB, dC are the fp32 accumulators before the binding's cast).
#define NNUNETV2_CIPA_SCAN_HOST_EMULATION 1
#define __launch_bounds__(...)

#include <cuda_runtime.h>

#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

// ---- the CUDA built-ins the kernels use, for host threads ----
namespace emu {
struct Index3 {
    unsigned x = 0, y = 0, z = 0;
};
struct Warp {
    std::barrier<> meet{32};
    float slots[32] = {};
};
thread_local Warp* warp = nullptr;
thread_local int lane = 0;
std::mutex atomic_mutex;

inline float exchange(float value, int source_lane) {
    warp->slots[lane] = value;
    warp->meet.arrive_and_wait();
    const float result = warp->slots[source_lane];
    warp->meet.arrive_and_wait();
    return result;
}
}  // namespace emu

thread_local emu::Index3 threadIdx, blockIdx;

template <typename T>
inline T __ldg(const T* ptr) { return *ptr; }
inline float __expf(float x) { return std::exp(x); }
inline float __uint_as_float(unsigned bits) {
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
}
using std::max;
using std::min;

inline float atomicAdd(float* address, float value) {
    const std::lock_guard<std::mutex> guard(emu::atomic_mutex);
    const float old = *address;
    *address = old + value;
    return old;
}

// Shuffle semantics of the CUDA programming guide, segment width a power of two.
inline float __shfl_sync(unsigned, float v, int src, int width = 32) {
    const int base = emu::lane & ~(width - 1);
    return emu::exchange(v, base + (src & (width - 1)));
}
inline float __shfl_up_sync(unsigned, float v, unsigned delta, int width = 32) {
    const int in_segment = emu::lane & (width - 1);
    return emu::exchange(v, in_segment >= static_cast<int>(delta) ? emu::lane - static_cast<int>(delta) : emu::lane);
}
inline float __shfl_down_sync(unsigned, float v, unsigned delta, int width = 32) {
    const int in_segment = emu::lane & (width - 1);
    return emu::exchange(v, in_segment + static_cast<int>(delta) < width ? emu::lane + static_cast<int>(delta)
                                                                         : emu::lane);
}
inline float __shfl_xor_sync(unsigned, float v, int mask, int width = 32) {
    const int src = emu::lane ^ mask;
    const int segment_end = (emu::lane & ~(width - 1)) + width;
    return emu::exchange(v, src < segment_end ? src : emu::lane);
}

#include "scan_bwd.cuh"
#include "scan_fwd.cuh"

namespace {

using nnunetv2_cipa::ScanBwdParams;
namespace kernels = nnunetv2_cipa::scan;

template <typename Body>
void launch(int blocks, Body body) {
    for (int block = 0; block < blocks; ++block) {
        std::vector<std::unique_ptr<emu::Warp>> warps;
        for (int w = 0; w < nnunetv2_cipa::kScanThreads / 32; ++w) warps.push_back(std::make_unique<emu::Warp>());
        std::vector<std::thread> threads;
        for (int t = 0; t < nnunetv2_cipa::kScanThreads; ++t) {
            threads.emplace_back([&, t] {
                blockIdx.x = static_cast<unsigned>(block);
                threadIdx.x = static_cast<unsigned>(t);
                emu::warp = warps[t / 32].get();
                emu::lane = t % 32;
                body();
            });
        }
        for (auto& thread : threads) thread.join();
    }
}

template <int kN, typename in_t, typename out_t>
void run_n(const ScanBwdParams& p) {
    const int blocks = p.batch * p.row_blocks;
    launch(blocks, [&] { kernels::selective_scan_fwd_kernel<kN, in_t, out_t>(p); });
    launch(blocks, [&] { kernels::selective_scan_bwd_kernel<kN, in_t, out_t>(p); });
}

template <typename in_t, typename out_t>
void run(const ScanBwdParams& p) {  // the N specialisation choice of launch_fwd / launch_bwd
    if (p.dstate == 1) return run_n<1, in_t, out_t>(p);
    if (p.dstate <= 4) return run_n<4, in_t, out_t>(p);
    return run_n<16, in_t, out_t>(p);
}

std::vector<char> read_file(const std::string& path, size_t bytes) {
    std::vector<char> data(bytes);
    std::ifstream in(path, std::ios::binary);
    if (!in.read(data.data(), static_cast<std::streamsize>(bytes))) {
        std::fprintf(stderr, "cannot read %zu bytes from %s\n", bytes, path.c_str());
        std::exit(2);
    }
    return data;
}

void write_file(const std::string& path, const void* data, size_t bytes) {
    std::ofstream out(path, std::ios::binary);
    out.write(static_cast<const char*>(data), static_cast<std::streamsize>(bytes));
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s <folder>\n", argv[0]);
        return 2;
    }
    const std::string dir = std::string(argv[1]) + "/";
    int batch, dim, seqlen, dstate, groups, dtype, out_float, softplus, has_D, has_bias, has_dlast;
    std::ifstream meta(dir + "meta.txt");
    if (!(meta >> batch >> dim >> seqlen >> dstate >> groups >> dtype >> out_float >> softplus >> has_D >> has_bias >>
          has_dlast)) {
        std::fprintf(stderr, "bad meta.txt\n");
        return 2;
    }
    const size_t in_size = dtype == 0 ? 4 : 2, out_size = (out_float || dtype == 0) ? 4 : 2;
    const size_t rows = static_cast<size_t>(batch) * dim * seqlen, group_rows = static_cast<size_t>(batch) * groups * dstate * seqlen;

    ScanBwdParams p;  // the size fields exactly as binding.cpp's fill_sizes computes them
    p.batch = batch;
    p.dim = dim;
    p.seqlen = seqlen;
    p.dstate = dstate;
    p.n_groups = groups;
    p.dim_per_group = dim / groups;
    p.lanes = nnunetv2_cipa::scan_lanes_for_length(seqlen);
    p.lanes_log2 = nnunetv2_cipa::scan_log2(p.lanes);
    p.chunk_len = p.lanes * nnunetv2_cipa::kScanItems;
    p.n_chunks = (seqlen + p.chunk_len - 1) / p.chunk_len;
    p.row_blocks = (dim + nnunetv2_cipa::kScanThreads / p.lanes - 1) / (nnunetv2_cipa::kScanThreads / p.lanes);
    p.delta_softplus = softplus != 0;
    p.out_float = out_size == 4;

    auto u = read_file(dir + "u.bin", rows * in_size), delta = read_file(dir + "delta.bin", rows * in_size);
    auto B = read_file(dir + "B.bin", group_rows * in_size), C = read_file(dir + "C.bin", group_rows * in_size);
    auto A = read_file(dir + "A.bin", static_cast<size_t>(dim) * dstate * 4);
    auto dout = read_file(dir + "dout.bin", rows * out_size);
    std::vector<char> D, bias, dlast;
    if (has_D) D = read_file(dir + "D.bin", static_cast<size_t>(dim) * 4);
    if (has_bias) bias = read_file(dir + "bias.bin", static_cast<size_t>(dim) * 4);
    if (has_dlast) dlast = read_file(dir + "dlast.bin", static_cast<size_t>(batch) * dim * dstate * 4);

    std::vector<char> out(rows * out_size), du(rows * in_size), ddelta(rows * in_size);
    std::vector<float> ckpt(static_cast<size_t>(batch) * dim * p.n_chunks * dstate);
    std::vector<float> dA(static_cast<size_t>(dim) * dstate), dB(group_rows), dC(group_rows), dD(dim), dbias(dim);
    p.u = u.data();
    p.delta = delta.data();
    p.A = reinterpret_cast<const float*>(A.data());
    p.B = B.data();
    p.C = C.data();
    p.D = has_D ? reinterpret_cast<const float*>(D.data()) : nullptr;
    p.delta_bias = has_bias ? reinterpret_cast<const float*>(bias.data()) : nullptr;
    p.out = out.data();
    p.ckpt = ckpt.data();
    p.dout = dout.data();
    p.ckpt_in = ckpt.data();
    p.dlast_state = has_dlast ? reinterpret_cast<const float*>(dlast.data()) : nullptr;
    p.du = du.data();
    p.ddelta = ddelta.data();
    p.dA = dA.data();
    p.dB = dB.data();
    p.dC = dC.data();
    p.dD = has_D ? dD.data() : nullptr;
    p.ddelta_bias = has_bias ? dbias.data() : nullptr;

    if (dtype == 0) {
        run<float, float>(p);
    } else if (dtype == 1) {
        p.out_float ? run<__half, float>(p) : run<__half, __half>(p);
    } else {
        p.out_float ? run<__nv_bfloat16, float>(p) : run<__nv_bfloat16, __nv_bfloat16>(p);
    }

    write_file(dir + "out.bin", out.data(), out.size());
    write_file(dir + "ckpt.bin", ckpt.data(), ckpt.size() * 4);
    write_file(dir + "du.bin", du.data(), du.size());
    write_file(dir + "ddelta.bin", ddelta.data(), ddelta.size());
    write_file(dir + "dA.bin", dA.data(), dA.size() * 4);
    write_file(dir + "dB.bin", dB.data(), dB.size() * 4);
    write_file(dir + "dC.bin", dC.data(), dC.size() * 4);
    write_file(dir + "dD.bin", dD.data(), dD.size() * 4);
    write_file(dir + "dbias.bin", dbias.data(), dbias.size() * 4);
    return 0;
}
