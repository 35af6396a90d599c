#!/usr/bin/env bash
# The GPU path in one run (about 6 minutes on one H200): every number docs/benchmarks.md quotes
# for a GPU, one table at the end, exit status non-zero if any part failed.
#
#   benchmarks/gpu_suite.sh                       # on a GPU machine: the paper settings
#   benchmarks/gpu_suite.sh --device cpu --smoke  # check the whole suite end to end on a CPU
#   options: --data DIR (the demo database; built with `medfoundry demo-data` when absent)
#            --parts throughput,memory,mae,ddp,compiled (default: all, in that order)
#
# Parts (each in its own process, with its own time limit, so one failure does not hide the rest):
#   throughput  multi-task pretraining, paper setting: Swin-T 224 px, 8 mixed cls/seg/det tasks on
#               the demo database's real images, batch 32 per task, bf16: images/s with real loading,
#               with batches already on the device, and a plain single-task loop on the same model;
#               NVML busy; peak memory; a profile (share of wall time with a GPU kernel running)
#   memory      training memory versus number of tasks (3 -> 64) on the device
#   mae         MAE ViT-B/16 bf16 training throughput and model-FLOPs utilisation
#   ddp         2-process DDP pretraining check, when the machine has two GPUs (else skipped)
#   compiled    the throughput and MAE parts again with torch.compile
# Results (CSV + JSON per part, the logs, summary.json) go to $OUT/gpu_suite when OUT is set (as on a
# lent device machine), else to benchmarks/results/gpu_suite; with OUT set they are also packed
# into $OUT/gpu_suite.tgz.
set -uo pipefail
cd "$(dirname "$0")/.."

DEVICE=cuda SMOKE=0 DATA="" PARTS="throughput,memory,mae,ddp,compiled"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --smoke) SMOKE=1; shift ;;
    --data) DATA="$2"; shift 2 ;;
    --parts) PARTS="$2"; shift 2 ;;
    *) echo "gpu_suite.sh: unknown option $1 (see the header of this file)" >&2; exit 2 ;;
  esac
done

PY=${PYTHON:-python3}
RESULTS="${OUT:+$OUT/gpu_suite}"
RESULTS="${RESULTS:-benchmarks/results/gpu_suite}"
mkdir -p "$RESULTS"
export MEDFOUNDRY_BENCH_RESULTS="$RESULTS" PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if [[ -z "$DATA" ]]; then
  DATA="$RESULTS/demo-data"
  [[ -f "$DATA/tasks.yaml" ]] || "$PY" -m medfoundry.cli.main demo-data "$DATA" >/dev/null || exit 1
fi

if [[ $SMOKE == 1 ]]; then  # tiny models, a few steps: checks that every part runs
  THROUGHPUT=(--encoder resnet10t --image-size 64 --batch-size 8 --tasks 3 --steps 2 --warmup 1 --num-workers 0)
  MEMORY=(--encoder resnet10t --image-size 32 --batch-size 4 --task-counts 3,6 --joint-task-counts 3 --steps 1)
  MAE=(--encoder vit_tiny_patch16_224 --image-size 64 --batch-size 4 --decoder-dim 64 --decoder-depth 1
       --decoder-heads 2 --rounds 2 --steps 1 --warmup 1)
  LIMIT_SCALE=3  # a CPU is slower: more time per part
else
  THROUGHPUT=(--encoder swin_tiny_patch4_window7_224 --image-size 224 --batch-size 32 --tasks 8 --steps 20
              --warmup 3 --num-workers 2)
  MEMORY=(--encoder swin_tiny_patch4_window7_224 --image-size 224 --batch-size 32
          --task-counts 3,6,12,24,48,64 --joint-task-counts 3,6,12 --steps 2 --parallel 9)
  MAE=(--encoder vit_base_patch16_224 --image-size 224 --batch-size 256 --decoder-dim 512 --decoder-depth 8
       --decoder-heads 16 --rounds 5 --steps 5 --warmup 2)
  LIMIT_SCALE=1
fi
PEAK=$("$PY" - "$DEVICE" <<'EOF'
import sys, torch
# dense bf16 peak in TFLOP/s by the vendors' datasheets (H200 SXM = H100 SXM); 0: unknown
name = torch.cuda.get_device_name() if sys.argv[1].startswith("cuda") else ""
peaks = {"H200": 989, "H100": 989, "A100": 312, "L40S": 362, "B200": 2250}
print(next((v for k, v in peaks.items() if k in name), 0))
EOF
)

"$PY" -c "import platform, torch, timm; print('python', platform.python_version(), '| torch', torch.__version__,
  '| timm', timm.__version__, '| device', torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')"
declare -A STATUS
run_part() {  # name, time limit in seconds, command...
  local name=$1 limit=$(( $2 * LIMIT_SCALE )); shift 2
  echo "=== $name (limit ${limit}s): $*"
  local started=$SECONDS
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$RESULTS/$name.log"
  local rc=${PIPESTATUS[0]}
  case $rc in
    0) STATUS[$name]="ok ($(( SECONDS - started ))s)" ;;
    124|137) STATUS[$name]="FAILED: over its ${limit}s limit" ;;
    *) STATUS[$name]="FAILED: exit $rc" ;;
  esac
  echo "=== $name: ${STATUS[$name]}"
}
want() { [[ ",$PARTS," == *",$1,"* ]]; }

GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count())")
want throughput && run_part throughput 180 "$PY" benchmarks/gpu_throughput.py --device "$DEVICE" \
  --data "$DATA" --modes eager "${THROUGHPUT[@]}"
want memory && run_part memory 90 "$PY" benchmarks/memory_vs_tasks.py --device "$DEVICE" --precision bf16 \
  --strategies memory_constant,joint "${MEMORY[@]}"
want mae && run_part mae 90 "$PY" benchmarks/mae_throughput.py --device "$DEVICE" --precision bf16 \
  --variants drop_tokens --peak-tflops "$PEAK" "${MAE[@]}"
if want ddp; then
  if [[ $DEVICE == cuda* && $GPUS -ge 2 ]]; then
    run_part ddp 120 torchrun --standalone --nproc_per_node=2 -m medfoundry.cli.main pretrain \
      configs/tiny_cpu.yaml --set "tasks=$PWD/$DATA/tasks.yaml" --set "run_dir=$RESULTS/ddp_run" \
      --set training.device=cuda --set training.precision=bf16 --set training.max_steps=20
  else
    STATUS[ddp]="skipped: $GPUS GPU(s); needs 2"
    echo "=== ddp: ${STATUS[ddp]}"
  fi
fi
if want compiled; then
  run_part throughput_compiled 200 "$PY" benchmarks/gpu_throughput.py --device "$DEVICE" \
    --data "$DATA" --modes compiled --profile-steps 0 "${THROUGHPUT[@]}"
  run_part mae_compiled 120 "$PY" benchmarks/mae_throughput.py --device "$DEVICE" --precision bf16 \
    --variants drop_tokens --peak-tflops "$PEAK" --compile "${MAE[@]}"
fi

STATUS_JSON=$(for k in "${!STATUS[@]}"; do printf '%s\t%s\n' "$k" "${STATUS[$k]}"; done)
"$PY" benchmarks/gpu_suite_summary.py "$RESULTS" <<<"$STATUS_JSON"
rc=$?
if [[ -n "${OUT:-}" ]]; then
  tar czf "$OUT/gpu_suite.tgz" -C "$OUT" --exclude demo-data --exclude ddp_run gpu_suite
fi
exit $rc
