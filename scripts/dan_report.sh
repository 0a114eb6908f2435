#!/usr/bin/env bash
# The experiments of docs/dan.md: synthetic RegDB-layout source -> shifted synthetic targets, DAN vs source-only,
# its ablation and the supervised target model. Usage: bash scripts/dan_report.sh WORKDIR [sweep|main|long]
# (sweep then main by default, about 13 minutes on 2 shared cores; long: 8 more minutes). The sweep picks the
# defaults of dan_synthetic.yaml; long repeats the noise row with 10 adaptation epochs instead of 3.
set -euo pipefail
W=$(realpath -m "${1:?usage: dan_report.sh WORKDIR [sweep|main]}")
STAGE=${2:-all}
V="python3 -m vireid.cli.main"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # on 2 shared cores one thread is ~2x faster than two
mkdir -p "$W" && cd "$W"
EPOCHS=3                                   # adaptation epochs (every adapted / continued model)
# Data: source ids from seed 1; target ids from seed 2 (other people), shifted four ways; a held-out
# target (seed 3, colour shift) for the hyper-parameter sweep.
[ -d src ] || $V synth --out src --layout regdb --ids 60 --seed 1 --size 64x32
[ -d raw ] || $V synth --out raw --layout regdb --ids 60 --seed 2 --size 64x32
[ -d sweep_raw ] || $V synth --out sweep_raw --layout regdb --ids 60 --seed 3 --size 64x32
for k in noise lighting color occlusion; do [ -d $k ] || $V synth-domain --in raw --out $k --kind $k --seed 0; done
[ -d sweep ] || $V synth-domain --in sweep_raw --out sweep --kind color --seed 1
OFF="recipe.lambda1=0 recipe.lambda2=0 recipe.lambda3=0"
ADAPT="train.epochs=$EPOCHS train.warmup_epochs=0 train.milestones=[] recipe.start_epoch=0 recipe.init=$W/runs/source"
if [ $STAGE = all ] || [ $STAGE = sweep ]; then
# 1. Source-only pre-training (target ignored: all target weights 0).
$V adapt dan_synthetic $OFF train.epochs=8 train.milestones=[6] --source src --target raw --out runs/source
# 2. Source-only baseline: the same EPOCHS more, still source-only (one model for every target).
$V adapt dan_synthetic $OFF $ADAPT --source src --target raw --out runs/source_only
# 3. Sweep on the held-out target (documented in docs/dan.md).
i=0
for s in "0.1 0.5 1.0" "1.0 1.0 1.0" "0.1 0.1 0.1" "0.1 0.5 5.0"; do
  set -- $s; i=$((i+1))
  $V adapt dan_synthetic $ADAPT recipe.lambda1=$1 recipe.lambda2=$2 recipe.lambda3=$3 \
     --source src --target sweep --out runs/sweep$i
  $V eval runs/sweep$i --data-root sweep --json runs/sweep$i/eval.json > /dev/null
done
$V eval runs/source_only --data-root sweep --json runs/source_only/eval_sweep.json > /dev/null
fi
[ $STAGE = sweep ] && exit 0
if [ $STAGE = long ]; then
  LONG="train.epochs=10 train.warmup_epochs=0 train.milestones=[8] recipe.start_epoch=0 recipe.init=$W/runs/source"
  $V adapt dan_synthetic $OFF $LONG --source src --target raw --out runs/long_source_only
  $V eval runs/long_source_only --data-root noise --json runs/long_source_only/eval_noise.json > /dev/null
  $V adapt dan_synthetic $LONG --source src --target noise --out runs/long_dan_noise
  $V eval runs/long_dan_noise --data-root noise --json runs/long_dan_noise/eval.json > /dev/null
  $V adapt dan_synthetic $OFF $LONG --source noise --target noise --out runs/long_supervised_noise
  $V eval runs/long_supervised_noise --data-root noise --json runs/long_supervised_noise/eval.json > /dev/null
  exit 0
fi
# 4. Per target kind: source-only, DAN, supervised target model (fine-tuned with labels from the same start).
for k in raw noise lighting color occlusion; do
  $V eval runs/source_only --data-root $k --json runs/source_only/eval_$k.json > /dev/null
  [ $k = raw ] && continue
  $V adapt dan_synthetic $ADAPT --source src --target $k --out runs/dan_$k
  $V eval runs/dan_$k --data-root $k --json runs/dan_$k/eval.json > /dev/null
  $V adapt dan_synthetic $OFF $ADAPT --source $k --target $k --out runs/supervised_$k
  $V eval runs/supervised_$k --data-root $k --json runs/supervised_$k/eval.json > /dev/null
done
# 5. Ablation on the colour target: each component alone on top of the source-only model.
for c in daa:"recipe.lambda2=0 recipe.lambda3=0" soft:"recipe.lambda1=0 recipe.lambda3=0" \
         cma:"recipe.lambda1=0 recipe.lambda2=0"; do
  name=${c%%:*}; set -- ${c#*:}
  $V adapt dan_synthetic $ADAPT "$@" --source src --target color --out runs/only_${name}_color
  $V eval runs/only_${name}_color --data-root color --json runs/only_${name}_color/eval.json > /dev/null
done
