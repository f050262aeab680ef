#!/usr/bin/env bash
# Install, then grade the bundled example submissions of every assignment into demo-out/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
export SEQGRADE_SECRET=${SEQGRADE_SECRET:-demo-secret-not-for-real-courses}
for dir in examples/*/; do
  name=$(basename "$dir")
  [ -f "assignments/$name/plan.py" ] || continue
  echo "== seqgrade grade $name $dir --out demo-out/$name"
  seqgrade grade "$name" "$dir" --out "demo-out/$name" --workers 2 --timeout 5 --fresh
  echo
done
echo "Feedback for each student: demo-out/<assignment>/<student>.md; gradebooks: demo-out/*/gradebook.csv"
