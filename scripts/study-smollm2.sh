#!/usr/bin/env bash
# Methods side by side on one budget (README "Methods side by side"): every config in
# configs/study-smollm2/ on the same reasoning-gym addition slice, seed and sampled-token budget,
# then one `cotkit compare` table and plot over the runs.
#
#   bash scripts/study-smollm2.sh              # one run after another (the runs took 66 minutes added up, one thread each)
#   JOBS=2 bash scripts/study-smollm2.sh       # two at a time, one thread each (40 minutes on 2 cores)
#   bash scripts/study-smollm2.sh star sft     # only these configs (then compare every finished run)
#   SEED=1 JOBS=2 bash scripts/study-smollm2.sh  # the same slice, another training seed (sampling, data
#                                                # order, initialisation): runs/study-smollm2-seed1/
#
# A run that already finished is skipped and an interrupted one resumes (`--resume`), so the script
# can be run again after a stop. Runs go to runs/study-smollm2/<config>/, the comparison to
# runs/study-smollm2/compare.{md,json,png}.
set -euo pipefail
cd "$(dirname "$0")/.."
COTKIT=${COTKIT:-.venv/bin/cotkit}
JOBS=${JOBS:-1}
SEED=${SEED:-}
OUT=runs/study-smollm2${SEED:+-seed$SEED}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( JOBS > 1 ? 1 : 2 ))}

if [ $# -gt 0 ]; then names=("$@"); else
  names=(); for f in configs/study-smollm2/*.yaml; do names+=("$(basename "$f" .yaml)"); done
fi
mkdir -p "$OUT/logs"

run_one() {
  local name=$1 dir="$OUT/$1" resume=() seed=()
  [ -n "$SEED" ] && seed=(--seed "$SEED" --output-dir "$dir")
  if [ -f "$dir/state.json" ] && grep -q '"status": "complete"' "$dir/state.json"; then
    echo "$name: complete already"; return 0
  fi
  [ -f "$dir/state.json" ] && resume=(--resume)
  echo "$name: running (log $OUT/logs/$name.log)"
  local start=$SECONDS
  if "$COTKIT" train --config "configs/study-smollm2/$name.yaml" "${seed[@]}" "${resume[@]}" > "$OUT/logs/$name.log" 2>&1; then
    echo "$name: finished in $(( SECONDS - start )) s"
  else
    echo "$name: FAILED after $(( SECONDS - start )) s, see $OUT/logs/$name.log"; return 1
  fi
}
export -f run_one; export COTKIT OUT SEED

status=0
printf '%s\n' "${names[@]}" | xargs -P "$JOBS" -I{} bash -c 'run_one "$@"' _ {} || status=1

finished=()
for d in "$OUT"/*/; do
  grep -qs '"status": "complete"' "$d/state.json" && finished+=("${d%/}")
done
against=()  # every final model also tested against STaR's (the main job's method), when it ran
grep -qs '"status": "complete"' "$OUT/star/state.json" && against=(--against "$OUT/star")
if [ ${#finished[@]} -gt 0 ]; then
  COLUMNS=260 "$COTKIT" compare "${finished[@]}" "${against[@]}" --plot "$OUT/compare.png" > "$OUT/compare.md"
  "$COTKIT" compare "${finished[@]}" "${against[@]}" --plot "$OUT/compare.png" --json > "$OUT/compare.json"
  cat "$OUT/compare.md"
fi
exit $status
