#!/usr/bin/env bash
# Every GPU measurement in one command, for a lent GPU machine (issue 22), inside a time budget:
#
#   bash benchmarks/gpu.sh OUT            # on the GPU machine: full Broden size, device cuda
#   bash benchmarks/gpu.sh OUT --tiny     # rehearsal on any machine: 64 images at 64 px, device cpu
#
# In order, each with its own time limit, all within BUDGET seconds (default 480; a step that has no
# time left is skipped and says so): the machine and torch; the CUDA-vs-CPU dissection test
# (tests/test_cuda.py); benchmarks/dissect.py on ResNet-18 layer4 (keeping its activations); a
# torch.profiler trace of its slowest stage (benchmarks/profile_stage.py, on a 4,096-image set);
# benchmarks/attribution.py; benchmarks/net2vec.py on the ResNet-18 activations; benchmarks/dissect.py
# on ResNet-50 layer4. It writes at most 8 files into OUT (what the device tool brings back): log.txt
# (everything, with each step's exit code and seconds), cuda_check.txt, dissect.txt, dissect.json,
# profile.txt, trace.json.gz, attribution.txt, net2vec.txt. It needs only torch, torchvision, numpy,
# pandas, tqdm, pyyaml, pillow and pytest, and runs the tree's code (PYTHONPATH=src), so the GPU
# machine's own torch serves. Settings: PYTHON (python3), DEVICE, BUDGET, BATCH (extraction batch,
# 256), CACHE (where the packed sets are built, /tmp/cnnscope-bench; about 32 GB at full size).
set -uo pipefail
out=${1:?usage: bash benchmarks/gpu.sh OUT [--tiny]}
mode=${2:-full}
cd "$(dirname "$0")/.."
mkdir -p "$out"
out=$(cd "$out" && pwd)
export PYTHONPATH="$PWD/src:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
cache=${CACHE:-/tmp/cnnscope-bench}
batch=${BATCH:-256}
case "$mode" in
  full) images=63305 size=224 profile_images=4096 attribution_batch=32 device=${DEVICE:-cuda} ;;
  --tiny) images=64 size=64 profile_images=64 attribution_batch=1 device=${DEVICE:-cpu} ;;
  *) echo "unknown mode '$mode': use --tiny or nothing" >&2; exit 2 ;;
esac
deadline=$((SECONDS + ${BUDGET:-480}))
log="$out/log.txt"
: >"$log"

# step NAME CAP TABLE CMD...: run CMD under at most CAP seconds (less if the budget has less left),
# its output into the log and, unless TABLE is -, into OUT/TABLE.
step() {
  local name=$1 cap=$2 table=$3 left rc start
  shift 3
  left=$((deadline - SECONDS))
  if ((left < 10)); then
    echo "== $name: skipped, $left s of the budget left" | tee -a "$log"
    return
  fi
  ((cap > left)) && cap=$left
  echo "== $name (at most $cap s): $*" | tee -a "$log"
  start=$SECONDS
  if [ "$table" = - ]; then
    timeout -k 10 "$cap" "$@" 2>&1 | tee -a "$log"
  else
    timeout -k 10 "$cap" "$@" 2>&1 | tee "$out/$table" | tee -a "$log"
  fi
  rc=${PIPESTATUS[0]}
  ((rc == 124 || rc == 137)) && echo "   (stopped at its time limit)" | tee -a "$log"
  echo "== $name: exit $rc in $((SECONDS - start)) s" | tee -a "$log"
}

{
  echo "cnnscope GPU benchmarks, mode $mode, device $device, $(date -u +%FT%TZ)"
  echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with changes)')"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv 2>&1 || true
  "$py" -c 'import torch, torchvision, numpy, sys
print("python", sys.version.split()[0], "torch", torch.__version__, "torchvision", torchvision.__version__,
      "numpy", numpy.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())
print("cuda available:", torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else "")
print("cpu threads:", torch.get_num_threads())'
  echo "cores: $(nproc); memory: $(free -g | awk '/Mem:/{print $2}') GB; cache $cache: $(df -h "$(dirname "$cache")" | awk 'NR==2{print $4}') free"
} 2>&1 | tee -a "$log"

test_device=$device
[ "$mode" = --tiny ] && test_device=cpu # the rehearsal compares the CPU with itself, batched otherwise
step cuda_check 150 cuda_check.txt env CNNSCOPE_TEST_DEVICE="$test_device" \
  "$py" -m pytest tests/test_cuda.py -q -s -rA -p no:cacheprovider
rm -f "$out/dissect.json"
step dissect_resnet18 150 dissect.txt "$py" benchmarks/dissect.py --images "$images" --size "$size" \
  --arch resnet18 --device "$device" --batch-size "$batch" --cache "$cache" \
  --json "$out/dissect.json" --keep-activations
if [ -f "$out/dissect.json" ]; then
  step profile 60 - "$py" benchmarks/profile_stage.py --table "$out/dissect.json" --images "$profile_images" \
    --size "$size" --device "$device" --batch-size "$batch" --cache "$cache" --out "$out"
else
  echo "== profile: skipped, dissect_resnet18 wrote no table" | tee -a "$log"
fi
step attribution 45 attribution.txt "$py" benchmarks/attribution.py --size "$size" --batch "$attribution_batch" \
  --device "$device"
step net2vec 150 net2vec.txt "$py" benchmarks/net2vec.py --images "$images" --size "$size" --device "$device" \
  --cache "$cache" --activations
step dissect_resnet50 200 - "$py" benchmarks/dissect.py --images "$images" --size "$size" --arch resnet50 \
  --device "$device" --batch-size "$batch" --cache "$cache" --json "$out/dissect.json"
# ResNet-50's table goes after ResNet-18's in dissect.txt (one file per benchmark comes back).
sed -n '/^== dissect_resnet50 /,$p' "$log" | tail -n +2 >>"$out/dissect.txt"
echo "== done in $SECONDS s; files: $(cd "$out" && ls | tr '\n' ' ')" | tee -a "$log"
