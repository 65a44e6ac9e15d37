#!/usr/bin/env bash
# phiscale end to end on the lent GPU machine, as ONE device command of under 8 minutes:
#   kit        install the carried wheels (.whl/, benchmarks/gpu_kit.sh) into /tmp/site: no index, no deps
#   ffcv       build FFCV 1.0.2 there against the carried Debian packages (.debs/), else install the
#              carried cp312 wheel; check that it imports with its libraries
#   images     ImageNet-shaped JPEGs (1000 classes, 300-500 px) made in parallel, then a train and a
#   betons     val .beton written by phiscale-write-beton
#   a_ddp      phiscale-train from those .betons: efficientnet_b0 @ 224, bf16-mixed, channels_last,
#              batch 256, Lightning's DDP strategy on 1 GPU, FFCV loader, MLflow sqlite store ...
#   d_resume   ... whose first process is SIGKILLed once its first last.ckpt exists; the same command
#              again (same output dir) must continue the same MLflow run (restarts=1)
#   e_bare     benchmarks/overhead.py: the bare PyTorch loop vs phiscale's, same card, model and batch
#   c_zero1-3  a_ddp through Lightning's DeepSpeedStrategy, ZeRO stage 1, 2, 3
#   f_eval_zero  phiscale-eval on c_zero2's DeepSpeed checkpoint directory (consolidated by the loader)
#   g_reshard  c_zero2's ZeRO checkpoint (1 rank) continued on 2 ranks (CPU gloo DDP: one GPU cannot hold
#              2 NCCL ranks): refused in one line naming resume=weights, then resume=weights continues
#              the same MLflow run from its consolidated weights, tagged phiscale.resumed_from=weights:...
#   b_compile  a_ddp with trainer.compile=true
#   report     phiscale-report over the runs; benchmarks/gpu_summary.py puts every figure in one JSON
# Each step runs under `timeout`, within what is left of the session's time; a step that fails is
# recorded with its log's tail and the next one runs.
#
#   OUT=DIR bash benchmarks/gpu_session.sh      on the GPU machine (carry .whl and .debs)
#   bash benchmarks/gpu_session.sh --cpu        rehearsal here: the same steps on CPU with tiny sizes,
#                                               this machine's packages ($PYTHON, default .venv/bin/python)
# $OUT (default: a new temporary folder) receives 7 files: gpu_session.json, report.md, report.csv,
# top1_vs_images_per_s.png, session.log, logs.tar.gz (every step's log, steps.tsv, run summaries) and
# mlflow.db.gz (the store). $WORK (default: a new temporary folder) holds the data, runs and store.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MODE=gpu
case "${1:-}" in
  "") ;;
  --cpu) MODE=cpu ;;
  *) echo "gpu_session.sh: unknown argument '$1'; use no argument (on the GPU machine) or --cpu" >&2; exit 2 ;;
esac

OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/phiscale-session-out.XXXXXX")}
KEEP_WORK=${WORK:+yes}
WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/phiscale-session.XXXXXX")}
mkdir -p "$OUT" "$WORK/logs" "$WORK/data" || exit 1
EXPERIMENT=gpu-session
URI=sqlite:///$WORK/mlflow.db
export PYTHONUNBUFFERED=1 HYDRA_FULL_ERROR=1

# ---- sizes: the GPU session, and the CPU rehearsal of the same steps ----
if [ "$MODE" = gpu ]; then
  PY=python3
  SITE=/tmp/site PREFIX=/tmp/ffcv-prefix
  export PYTHONPATH=$SITE:$ROOT/src PHISCALE_CACHE=$WORK/cache
  # 12,800 train images = 50 steps of 256 per epoch; several epochs per run.
  CLASSES=1000 TRAIN_PER_CLASS=13 VAL_PER_CLASS=2 MIN_PX=300 MAX_PX=500 BETON_PX=500
  BATCH=256 RES=224 WORKERS=16 STEPS_A=300 STEPS_B=150 STEPS_ZERO=100 CKPT_EVERY=1000 LOG_EVERY=25
  TRAINER=(trainer=ddp trainer.devices=1 trainer.precision=bf16-mixed)
  BARE=(--device cuda --precision bf16-mixed --batch-size "$BATCH" --resolution "$RES" --steps 50 --warmup 10 --repeats 2)
  # Steps start only before SESSION_S (expected: all done by ~420 s); the report and the summary have
  # 40 s each of their own after it, so the command ends within ~9.5 minutes however long steps run.
  SESSION_S=450 MIN_STEP_S=25
  T_KIT=90 T_FFCV=150 T_IMAGES=90 T_BETONS=120 T_FIRST=150 T_A=180 T_BARE=120 T_ZERO=100 T_COMPILE=240
  T_EVAL_ZERO=60 T_RESHARD=90 T_END=40
else
  PY=${PYTHON:-$ROOT/.venv/bin/python}
  export PYTHONPATH=$ROOT/src${PYTHONPATH:+:$PYTHONPATH}
  # 200 train images = 12 steps of 16 per epoch; the first last.ckpt comes at step 6.
  CLASSES=10 TRAIN_PER_CLASS=20 VAL_PER_CLASS=4 MIN_PX=40 MAX_PX=64 BETON_PX=48
  BATCH=16 RES=32 WORKERS=2 STEPS_A=28 STEPS_B=12 STEPS_ZERO=12 CKPT_EVERY=6 LOG_EVERY=4
  TRAINER=(trainer=ddp trainer.devices=1 trainer.accelerator=cpu)
  BARE=(--device cpu --batch-size "$BATCH" --resolution "$RES" --steps 8 --warmup 2 --repeats 1)
  # SLOWER=N (default 1) multiplies these limits: a rehearsal at low priority on a busy machine (the test
  # suite runs it niced beside its other tests, tests/benchmarks/test_gpu_session_rehearsal.py).
  X=${SLOWER:-1}
  SESSION_S=$((900 * X)) MIN_STEP_S=25
  T_KIT=$((60 * X)) T_FFCV=$((120 * X)) T_IMAGES=$((120 * X)) T_BETONS=$((180 * X)) T_FIRST=$((300 * X))
  T_A=$((300 * X)) T_BARE=$((300 * X)) T_ZERO=$((120 * X)) T_COMPILE=$((600 * X)) T_EVAL_ZERO=$((120 * X))
  T_RESHARD=$((300 * X)) T_END=$((40 * X))
fi
DATA=(data=imagefolder data.loader=ffcv "data.train_path=$WORK/data/train.beton" "data.val_path=$WORK/data/val.beton"
      "data.num_classes=$CLASSES" "data.batch_size=$BATCH" "data.num_workers=$WORKERS")
TRAIN_ARGS=(model=efficientnet_b0 "${DATA[@]}" "train_resolution=$RES" trainer.limit_val_batches=2
            "trainer.log_every_n_steps=$LOG_EVERY" "trainer.ckpt_every_n_steps=$CKPT_EVERY" trainer.progress_bar=false
            "tracking.uri=$URI" "tracking.experiment=$EXPERIMENT" tracking.log_checkpoint=path "paths.root=$WORK/outputs")
SETTINGS=$(printf '{"mode": "%s", "model": "efficientnet_b0", "resolution": %d, "batch_size": %d, "classes": %d, "train_images": %d, "val_images": %d, "image_px": [%d, %d], "loader_workers": %d, "steps": {"a_ddp": %d, "b_compile": %d, "c_zero": %d}, "limit_val_batches": "2 (b_compile: 0)", "log_every_n_steps": %d, "e_bare": "benchmarks/overhead.py: the same model, resolution, batch and precision on in-memory batches (no loader); its own ratio is Lightning+MLflow vs bare, phiscale_over_bare is a_ddp (FFCV loader included) vs bare"}' \
  "$MODE" "$RES" "$BATCH" "$CLASSES" $((CLASSES * TRAIN_PER_CLASS)) $((CLASSES * VAL_PER_CLASS)) "$MIN_PX" "$MAX_PX" \
  "$WORKERS" "$STEPS_A" "$STEPS_B" "$STEPS_ZERO" "$LOG_EVERY")

# ---- recording steps ----
STARTED=$(date +%s)
DEADLINE=$((STARTED + SESSION_S))
now() { date +%s; }
record() {  # record NAME STATUS RC WALL_S LOG NOTE  -> one line of $WORK/steps.tsv
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$(echo "${6:-}" | tr '\t\n' '  ')" >>"$WORK/steps.tsv"
  echo "   -> $1: $2 in $4 s${6:+ ($6)}"
}
skip() { echo "== $1: skipped"; record "$1" skipped "" 0 "" "$2"; }
status_of() { case $1 in 0) echo ok ;; 124 | 137) echo timeout ;; *) echo failed ;; esac; }
budget_for() {  # what a step may use: its own limit, or what is left of the session if less
  local left=$((DEADLINE - $(now)))
  echo $((left < $1 ? left : $1))
}
# step NAME LIMIT_S CMD...: run CMD under `timeout`; a step may leave a one-line note in $WORK/logs/NAME.note
step() {
  local name=$1 limit; limit=$(budget_for "$2"); shift 2
  if [ "$limit" -lt "$MIN_STEP_S" ]; then skip "$name" "out of session time (${limit} s left)"; return 1; fi
  local log=$WORK/logs/$name.log t0 rc; t0=$(now)
  echo "== $name (limit ${limit} s)"
  timeout -k 10 "$limit" "$@" >"$log" 2>&1
  rc=$?
  record "$name" "$(status_of $rc)" "$rc" $(($(now) - t0)) "$log" "$(cat "$WORK/logs/$name.note" 2>/dev/null)"
  [ $rc -ne 0 ] && tail -5 "$log" | sed 's/^/   | /'
  return $rc
}

# ---- the steps that are more than one command (run by `step` through bash -c) ----
install_kit() {
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl || return 1
  python3 benchmarks/gpu_kit_deps.py installed .whl || echo "gpu_kit_deps: (a version above may still work)"
  # DeepSpeed is only needed by the c_zero steps: its import is noted, not a failure of the kit.
  if python3 -c "import deepspeed" >"$WORK/logs/deepspeed_import.log" 2>&1; then
    echo "deepspeed imports" >"$WORK/logs/kit.note"
  else
    echo "deepspeed does not import: $(tail -1 "$WORK/logs/deepspeed_import.log")" | tee "$WORK/logs/kit.note"
  fi
  python3 -c "import mlflow, hydra; print('kit: mlflow', mlflow.__version__, 'hydra', hydra.__version__)"
}
install_ffcv() {
  if [ "$MODE" = gpu ]; then
    if bash benchmarks/ffcv_from_debs.sh install .debs "$PREFIX" python3 "$SITE"; then
      echo "built here from the sdist" | tee "$WORK/logs/ffcv.note"
    else
      echo "ffcv: building failed (above); installing the carried cp312 wheel"
      python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" .debs/ffcv-1.0.2-cp312-*.whl ||
        return 1
      echo "the build failed: the cp312 wheel built with the kit" | tee "$WORK/logs/ffcv.note"
    fi
    bash benchmarks/ffcv_from_debs.sh isolation "$PREFIX" "$SITE"/ffcv/_libffcv*.so || true
    export LD_LIBRARY_PATH; LD_LIBRARY_PATH=$(bash benchmarks/ffcv_from_debs.sh libpath "$PREFIX")
  fi
  # ffcv 1.0.2 imports distutils.log, which Python 3.12 lacks unless setuptools' shim is active.
  if [ "$MODE" = gpu ] && ! "$PY" -c "import distutils.log" 2>/dev/null; then
    mkdir -p "$SITE/distutils" && : >"$SITE/distutils/__init__.py" &&
      echo "from logging import warning as warn  # ffcv 1.0.2 needs only this" >"$SITE/distutils/log.py"
    echo "no distutils: a one-line distutils.log shim added" >>"$WORK/logs/ffcv.note"
  fi
  "$PY" -c "from phiscale.data.numba_cache import import_ffcv; print('ffcv', import_ffcv().__file__, 'imports')"
}
make_images() {
  "$PY" benchmarks/synthetic_images.py "$WORK/data/train" --classes "$CLASSES" --per-class "$TRAIN_PER_CLASS" \
    --min-size "$MIN_PX" --max-size "$MAX_PX" --seed 0 &&
    "$PY" benchmarks/synthetic_images.py "$WORK/data/val" --classes "$CLASSES" --per-class "$VAL_PER_CLASS" \
      --min-size "$MIN_PX" --max-size "$MAX_PX" --seed 1
}
write_betons() {
  local split
  for split in train val; do
    "$PY" -m phiscale.cli.write_beton "$WORK/data/$split" "$WORK/data/$split.beton" --max-resolution "$BETON_PX" \
      --no-progress || return 1
  done
}
# The OpenMP threading layer phiscale asks numba for needs libgomp: try it once.
NUMBA_CHECK='
import os
os.environ.setdefault("NUMBA_THREADING_LAYER", "omp")
import numba, numpy as np
@numba.njit(parallel=True)
def total(a):
    s = 0.0
    for i in numba.prange(a.size):
        s += a[i]
    return s
total(np.ones(64))
print("numba threading layer:", numba.threading_layer())
'
export -f install_kit install_ffcv make_images write_betons
export MODE SITE PREFIX PY WORK CLASSES TRAIN_PER_CLASS VAL_PER_CLASS MIN_PX MAX_PX BETON_PX URI EXPERIMENT

train() { "$PY" -m phiscale.cli.train "${TRAIN_ARGS[@]}" "$@"; }
run_args() { echo "run_name=$1 paths.output_dir=$WORK/runs/$1 trainer.max_steps=$2"; }
# The ZeRO trainer: `trainer=deepspeed trainer.deepspeed.stage=N`, or the older one file per stage.
zero_trainer() {
  if [ -f conf/trainer/deepspeed.yaml ]; then echo "trainer=deepspeed trainer.deepspeed.stage=$1"; else echo "trainer=deepspeed_stage_$1"; fi
}

# a_ddp + d_resume: the first process is killed with SIGKILL as soon as its first last.ckpt exists
# (Lightning writes it atomically), then the same command runs to the end in the same output dir.
ddp_with_resume() {
  local ckpt=$WORK/runs/a_ddp/checkpoints/last.ckpt limit pid rc t0 killed=no
  limit=$(budget_for "$T_FIRST")
  if [ "$limit" -lt "$MIN_STEP_S" ]; then skip d_resume "out of session time"; skip a_ddp "out of session time"; return; fi
  echo "== d_resume: a_ddp's first process, SIGKILL once $ckpt exists (limit ${limit} s)"
  t0=$(now)
  # shellcheck disable=SC2046
  timeout -k 10 "$limit" "$PY" -m phiscale.cli.train "${TRAIN_ARGS[@]}" "${TRAINER[@]}" $(run_args a_ddp "$STEPS_A") \
    >"$WORK/logs/d_resume.log" 2>&1 &
  pid=$!  # timeout's pid, which leads the process group of everything it started
  while [ ! -f "$ckpt" ] && kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
  if [ -f "$ckpt" ] && kill -0 "$pid" 2>/dev/null; then kill -KILL -- "-$pid" && killed=yes; fi
  { wait "$pid"; } 2>/dev/null; rc=$?  # (no "Killed" line from bash)
  if [ $killed = yes ]; then
    record d_resume ok "$rc" $(($(now) - t0)) "$WORK/logs/d_resume.log" "SIGKILL $(($(now) - t0)) s in, once last.ckpt existed"
  else
    record d_resume failed "$rc" $(($(now) - t0)) "$WORK/logs/d_resume.log" "exited ($rc) before it could be killed after a last.ckpt"
  fi
  # shellcheck disable=SC2046
  step a_ddp "$T_A" "$PY" -m phiscale.cli.train "${TRAIN_ARGS[@]}" "${TRAINER[@]}" $(run_args a_ddp "$STEPS_A")
}

# f_eval_zero: phiscale-eval on c_zero2's DeepSpeed checkpoint directory, through the one loader.
eval_zero() {
  local ckpt=$WORK/runs/c_zero2/checkpoints/last.ckpt
  [ -d "$ckpt" ] || { echo "no DeepSpeed checkpoint directory at $ckpt (c_zero2 failed?)"; return 1; }
  "$PY" -m phiscale.cli.eval "$ckpt" --num-workers "$WORKERS" --batch-size 64 || return 1
  echo "phiscale-eval read $ckpt (a DeepSpeed directory)" >"$WORK/logs/f_eval_zero.note"
}
# g_reshard: c_zero2's checkpoint (written by 1 data-parallel rank) continued on 2 ranks. One GPU cannot
# hold 2 NCCL ranks, so the 2 ranks are CPU gloo DDP processes, small batches, a few steps.
reshard_zero() {
  local dir=$WORK/runs/c_zero2 out rc step
  [ -d "$dir/checkpoints/last.ckpt" ] || { echo "no DeepSpeed checkpoint directory in $dir (c_zero2 failed?)"; return 1; }
  step=$("$PY" -c "import sys; from pathlib import Path; from phiscale.train.checkpoint_io import deepspeed_step; print(deepspeed_step(Path(sys.argv[1])))" "$dir/checkpoints/last.ckpt")
  local targs; eval "targs=($TRAIN_ARGS_Q)"  # (an array cannot be exported: bash -c gets it quoted)
  local args=("${targs[@]}" trainer=ddp trainer.devices=2 trainer.accelerator=cpu trainer.precision=32-true
              data.batch_size=8 data.num_workers=2 tracking.log_model=false "run_name=c_zero2" "paths.output_dir=$dir" "trainer.max_steps=$((step + 4))")
  out=$("$PY" -m phiscale.cli.train "${args[@]}" 2>&1); rc=$?
  echo "$out" | tail -3
  if [ $rc -ne 2 ] || ! echo "$out" | grep -q "resume=weights"; then echo "expected a one-line refusal naming resume=weights (rc $rc)"; return 1; fi
  "$PY" -m phiscale.cli.train "${args[@]}" resume=weights || return 1
  "$PY" - "$URI" "$EXPERIMENT" "$step" <<'PY' >"$WORK/logs/g_reshard.note" || return 1
import sys
from mlflow.tracking import MlflowClient
uri, experiment, step = sys.argv[1], sys.argv[2], int(sys.argv[3])
client = MlflowClient(uri)
runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], "attributes.run_name = 'c_zero2'")
assert len(runs) == 1, f"{len(runs)} runs named c_zero2"
tag = runs[0].data.tags.get("phiscale.resumed_from", "")
steps = [m.step for m in client.get_metric_history(runs[0].info.run_id, "train/loss")]
assert tag.startswith("weights:") and len(steps) == len(set(steps)) and max(steps) >= step, (tag, steps)
print(f"1 rank -> 2: refused naming resume=weights, then one MLflow run ({tag}), steps {step} -> {max(steps) + 1}")
PY
}

main() {
  echo "phiscale GPU session ($MODE): work $WORK, results $OUT, $(date -u +%FT%TZ)"
  [ "$MODE" = gpu ] && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  echo "python: $("$PY" -c 'import sys; print(sys.executable, sys.version.split()[0])'), $(nproc) cores"

  if [ "$MODE" = gpu ]; then
    step kit "$T_KIT" bash -c install_kit
  else
    skip kit "--cpu: this machine's installed packages"
  fi
  step ffcv "$T_FFCV" bash -c install_ffcv
  if [ "$MODE" = gpu ]; then  # FFCV's native library finds OpenCV and libturbojpeg in the prefix
    export LD_LIBRARY_PATH; LD_LIBRARY_PATH=$(bash benchmarks/ffcv_from_debs.sh libpath "$PREFIX")
  fi
  if ! timeout 120 "$PY" -c "$NUMBA_CHECK"; then
    export NUMBA_THREADING_LAYER=workqueue
    echo "numba's OpenMP layer failed: NUMBA_THREADING_LAYER=workqueue for this session"
  fi
  step images "$T_IMAGES" bash -c make_images
  step betons "$T_BETONS" bash -c write_betons

  ddp_with_resume
  step e_bare "$T_BARE" "$PY" benchmarks/overhead.py --model efficientnet_b0 "${BARE[@]}"
  local n
  for n in 1 2 3; do
    if [ "$MODE" = gpu ]; then
      # shellcheck disable=SC2046
      step "c_zero$n" "$T_ZERO" "$PY" -m phiscale.cli.train "${TRAIN_ARGS[@]}" $(zero_trainer $n) trainer.devices=1 \
        $(run_args "c_zero$n" "$STEPS_ZERO")
    else
      # shellcheck disable=SC2046
      if train $(zero_trainer $n) trainer.devices=1 $(run_args "c_zero$n" "$STEPS_ZERO") --cfg job >/dev/null 2>&1; then
        skip "c_zero$n" "Lightning runs DeepSpeed on CUDA only; '$(zero_trainer $n)' composes"
      else
        skip "c_zero$n" "Lightning runs DeepSpeed on CUDA only; '$(zero_trainer $n)' does NOT compose"
      fi
    fi
  done
  if [ "$MODE" = gpu ]; then
    TRAIN_ARGS_Q=$(printf '%q ' "${TRAIN_ARGS[@]}") WORKERS=$WORKERS; export TRAIN_ARGS_Q WORKERS
    export -f eval_zero reshard_zero
    step f_eval_zero "$T_EVAL_ZERO" bash -c eval_zero
    step g_reshard "$T_RESHARD" bash -c reshard_zero
  else
    skip f_eval_zero "Lightning runs DeepSpeed on CUDA only: no DeepSpeed checkpoint to evaluate on CPU"
    skip g_reshard "Lightning runs DeepSpeed on CUDA only: no ZeRO checkpoint to reshard on CPU"
  fi
  if [ "$MODE" = gpu ] || [ "${REHEARSE_COMPILE:-0}" = 1 ]; then
    # No validation here: eval mode would compile a second graph, and only the train windows count.
    # shellcheck disable=SC2046
    step b_compile "$T_COMPILE" "$PY" -m phiscale.cli.train "${TRAIN_ARGS[@]}" "${TRAINER[@]}" trainer.compile=true \
      trainer.limit_val_batches=0 $(run_args b_compile "$STEPS_B")
  else
    skip b_compile "--cpu: torch.compile's C++ build takes minutes on CPU (REHEARSE_COMPILE=1 runs it)"
  fi

  # After the session's time: the report and the summary have T_END (40 s) each of their own.
  DEADLINE=$(($(now) + T_END))
  step report "$T_END" "$PY" -m phiscale.cli.report --experiment "$EXPERIMENT" --tracking-uri "$URI" \
    --out "$WORK/report"
  echo "== summary"
  timeout -k 5 "$T_END" "$PY" benchmarks/gpu_summary.py --work "$WORK" --tracking-uri "$URI" --experiment "$EXPERIMENT" \
    --out "$OUT/gpu_session.json" --settings "$SETTINGS" || echo "gpu_summary failed: steps.tsv is in logs.tar.gz"
  local f
  for f in report.md report.csv top1_vs_images_per_s.png; do
    [ -f "$WORK/report/$f" ] && cp "$WORK/report/$f" "$OUT/"
  done
  tar czf "$OUT/logs.tar.gz" -C "$WORK" steps.tsv logs $(cd "$WORK" && ls runs/*/summary.json runs/*/config.yaml 2>/dev/null)
  [ -f "$WORK/mlflow.db" ] && gzip -c "$WORK/mlflow.db" >"$OUT/mlflow.db.gz"
  echo "phiscale GPU session done in $(($(now) - STARTED)) s; results in $OUT"
}

main 2>&1 | tee "$OUT/session.log.tmp"
rc=${PIPESTATUS[0]}
mv "$OUT/session.log.tmp" "$OUT/session.log"
[ "$MODE" = cpu ] && [ -z "$KEEP_WORK" ] && rm -rf "$WORK"
exit "$rc"
