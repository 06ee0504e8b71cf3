#!/usr/bin/env bash
# Full reproduction of Baptista, Stuart & Tran (2025) (issue 8): about an hour on 2 CPU cores.
# Prints progress to stderr and the run time of every part into OUT/results.json ("seconds").
# Usage: benchmarks/reproduce_full.sh [OUT_DIR]   (default reproduce-baptista2025)
set -euo pipefail
OUT="${1:-reproduce-baptista2025}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
cd "$(dirname "$0")/.."
start=$(date +%s)
timeout 7200 .venv/bin/python -m oceanda reproduce baptista2025 --out "$OUT" --overwrite --seed 0
echo "wall seconds: $(( $(date +%s) - start ))"
.venv/bin/python - "$OUT/results.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
lag = r["lagrangian"]
print("retrieval", json.dumps(lag["retrieval"]))
for m, s in lag["data_assimilation"].items():
    print(f"{m:22s} rmse/clim domain {s['domain_t0']['rmse_fraction_of_climatology']:.3f} band {s['band_window']['rmse_fraction_of_climatology']:.3f}"
          f" spread-skill {s['domain_t0']['spread_skill']:.2f} crps/clim {s['domain_t0'].get('crps_fraction_of_climatology', float('nan')):.3f}"
          f" s/traj {s['seconds_per_trajectory']:.3g}")
print("digits", {k: v.get("test_accuracy", v.get("fine_tuned_accuracy")) for k, v in r["digits"]["losses"].items()})
PY
