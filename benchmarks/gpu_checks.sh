#!/usr/bin/env bash
# Every GPU check in one go, for a machine with a CUDA GPU, nvcc and torch (no network).
#
#   bash benchmarks/gpu_checks.sh LOGDIR [MAMBA_SDIST]
#
# 1. builds our extension ahead of time (NNUNETV2_CIPA_BUILD_CUDA=1, editable, no dependencies
#    fetched) and checks that it imports;
# 2. optionally builds mamba-ssm's selective_scan_cuda from its sdist for this GPU only (in the
#    background, benchmarks/build_mamba_reference.py) as the second CUDA reference;
# 3. runs the GPU tests (pytest -m gpu) of ops and architectures;
# 4. runs benchmarks/selective_scan.py (fp32, bf16) and benchmarks/network.py --device cuda.
# Each step writes LOGDIR/<step>.log; a failed step is reported and the next one still runs. The exit
# status is the number of failed steps.
set -u
LOGDIR=${1:?usage: gpu_checks.sh LOGDIR [MAMBA_SDIST]}
MAMBA_SDIST=${2:-}
mkdir -p "$LOGDIR"
export PYTHONUNBUFFERED=1 MAX_JOBS=${MAX_JOBS:-16} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-"8.0;9.0+PTX"}
PY=${PY:-python3}
failed=0

step() {  # step NAME COMMAND...: run, time, log, and count failures
    local name=$1; shift
    local t0=$SECONDS
    echo "=== $name: $*"
    if "$@" >"$LOGDIR/$name.log" 2>&1; then
        echo "=== $name: ok in $((SECONDS - t0)) s"
    else
        echo "=== $name: FAILED (exit $?) in $((SECONDS - t0)) s; tail of $LOGDIR/$name.log:"
        tail -n 25 "$LOGDIR/$name.log"
        failed=$((failed + 1))
    fi
}

step env bash -c "nvidia-smi -L; nvcc --version | tail -n 2; $PY -c 'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())'"
cat "$LOGDIR/env.log"

if [ -n "$MAMBA_SDIST" ]; then
    echo "=== mamba build started in the background"
    MAX_JOBS=10 $PY benchmarks/build_mamba_reference.py "$MAMBA_SDIST" --out /tmp/mamba_ref \
        >"$LOGDIR/mamba_build.log" 2>&1 &
    mamba_pid=$!
fi

step build_aot env NNUNETV2_CIPA_BUILD_CUDA=1 $PY -m pip install --no-deps --no-build-isolation --no-index -e .
step import_aot $PY -c "
from nnunetv2_cipa.ops import cuda_backend
m = cuda_backend.load_extension()
assert m is not None and m.__name__.endswith('_selective_scan_cuda'), m
print('loaded', m.__name__, m.__file__)"

step test_kernel $PY -m pytest -m gpu -q -p no:cacheprovider tests/ops/test_ops_cuda_kernel.py
step test_arch $PY -m pytest -m gpu -q -p no:cacheprovider tests/architectures/test_arch_forward.py

if [ -n "$MAMBA_SDIST" ]; then
    wait "$mamba_pid" && echo "=== mamba build ok" || { echo "=== mamba build FAILED"; tail -n 25 "$LOGDIR/mamba_build.log"; }
    tail -n 2 "$LOGDIR/mamba_build.log"
    mamba_path=$(sed -n 's/^PYTHONPATH=//p' "$LOGDIR/mamba_build.log")
    if [ -n "$mamba_path" ]; then
        export PYTHONPATH=$mamba_path${PYTHONPATH:+:$PYTHONPATH}
        step test_kernel_vs_mamba $PY -m pytest -m gpu -q -p no:cacheprovider tests/ops/test_ops_cuda_kernel.py -k mamba
    fi
fi

step bench_scan_fp32 $PY benchmarks/selective_scan.py --methods torch,cuda,mamba --dtype fp32
step bench_scan_bf16 $PY benchmarks/selective_scan.py --methods torch,cuda,mamba --dtype bf16
step bench_network $PY benchmarks/network.py --device cuda --gpu-batch 8 --repeats 3 --json "$LOGDIR/network.json"
for name in bench_scan_fp32 bench_scan_bf16 bench_network; do
    echo "--- $name"; cat "$LOGDIR/$name.log"
done
echo "=== $failed step(s) failed"
exit "$failed"
