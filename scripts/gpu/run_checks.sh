#!/usr/bin/env bash
# Runs sluice's GPU checks and benchmarks on a GPU machine and collects their results in one
# directory, ready to be copied under bench/results/.
#
#   scripts/gpu/run_checks.sh BUILD_DIR OUT_DIR [STEP...]
#
# BUILD_DIR is a release build made on a build machine (cmake --preset release) and copied here.
# Steps (all when none are named):
#   conformance   the fake driver's conformance checks against the real driver
#   overhead      launch overhead of libsluice.so, same-run ratio (scripts/gpu/launch_overhead.sh)
#   kill          kill-and-resume of Triton kernels through instrumented twins (kill_resume)
#   cupy          instrumented-kernel overhead on CuPy kernels (scripts/gpu/instrumented_overhead.py)
#   mechanisms    RT latency / BE throughput per mechanism, MPS and timeslice (scripts/gpu/mechanisms.py)
#   frameworks    bit-identical outputs of PyTorch, torch.compile, CUDA graphs, JAX, CuPy and an
#                 nvcc-built extension (check_frameworks.py)
#   daemon-kill   the same under sluiced with an RT pinger, so that twins are killed and resumed
#                 mid-run: 20,000 steps of a Triton kernel and of an nvcc-built extension, a
#                 torch.compile job and eager ResNet-50 training, bit for bit
#   mps-restart   sluiced --mps with the real control daemon, killed and started again (mps_restart.py)
#   demo          sluiced with PyTorch RT and BE clients (tests/integration/scheduler/gpu_demo.sh)
# Each step's log goes to OUT_DIR/STEP.log; a failed step does not stop the others. Exit 77 without a GPU.
set -uo pipefail
cd "$(dirname "$0")/../.."
build=$(cd "${1:?usage: run_checks.sh BUILD_DIR OUT_DIR [STEP...]}" && pwd)
out=${2:?usage: run_checks.sh BUILD_DIR OUT_DIR [STEP...]}
shift 2
steps=("$@")
((${#steps[@]})) || steps=(conformance overhead kill cupy mechanisms frameworks daemon-kill mps-restart demo)
if ! nvidia-smi -L >/dev/null 2>&1; then echo "run_checks.sh: no GPU" >&2; exit 77; fi
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >"$out/gpu.csv"

run_step() {
  local step=$1
  local start=$SECONDS
  case $step in
    conformance) "$build/tests/fake_driver/tests/fake_driver_conformance" ;;
    overhead) scripts/gpu/launch_overhead.sh "$build" "$out/shim_gpu_launch_overhead.json" 5 ;;
    kill) "$build/tests/gpu/ptx/kill_resume" --runs 20 --scale 0.0625 >"$out/ptx_kill_resume.json" ;;
    cupy) python3 scripts/gpu/instrumented_overhead.py --sluice-ptx "$build/ptx_rewriter/sluice-ptx" --out "$out" ;;
    mechanisms) python3 scripts/gpu/mechanisms.py --bin "$build/bench/gpu/mechanisms" --out "$out" ;;
    frameworks) python3 scripts/gpu/check_frameworks.py --shim "$build/shim/libsluice.so" --out "$out" ;;
    daemon-kill) python3 scripts/gpu/check_frameworks.py --shim "$build/shim/libsluice.so" --out "$out" \
                   --report-name frameworks_daemon_kill --cases triton_loop,torch_compile,cuda_extension,resnet50 \
                   --modes daemon-kill --triton-steps 20000 ;;
    mps-restart) python3 scripts/gpu/mps_restart.py --build "$build" --out "$out" ;;
    demo) python3 scripts/demo.d/scenario.py --build "$build" --mode gpu --duration 5 \
            --out-json "$out/scheduler_scenario_gpu.json" --out-md "$out/scheduler_scenario_gpu.md" ;;
    *) echo "unknown step $step"; return 2 ;;
  esac
  local status=$?
  echo "run_checks.sh: $step exit $status after $((SECONDS - start)) s" >&2
  return $status
}

failed=0
for step in "${steps[@]}"; do
  run_step "$step" >"$out/$step.log" 2>&1 || failed=1
  tail -n 3 "$out/$step.log"
done
exit $failed
