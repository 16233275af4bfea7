#!/usr/bin/env bash
# Same-run launch overhead of libsluice.so on a GPU: runs the launch-bound loop of tiny kernels
# (tests/gpu/shim/launch_overhead) alternately without and with LD_PRELOAD=libsluice.so, several
# times each, and writes the medians and the ratio as JSON.
#
#   scripts/gpu/launch_overhead.sh BUILD_DIR [OUT_JSON] [REPEATS]
#
# BUILD_DIR is a build made on the build machine and copied here (release preset recommended).
# OUT_JSON defaults to bench/results/shim_gpu_launch_overhead.json. Exits 77 without a GPU.
# (To check the script itself where there is no GPU: LD_LIBRARY_PATH=BUILD_DIR/fake runs it on the
# fake driver; those numbers mean nothing.)
set -euo pipefail
cd "$(dirname "$0")/../.."

build=${1:?usage: scripts/gpu/launch_overhead.sh BUILD_DIR [OUT_JSON] [REPEATS]}
out=${2:-bench/results/shim_gpu_launch_overhead.json}
repeats=${3:-5}
program="$build/tests/gpu/shim/launch_overhead"
shim="$(cd "$build/shim" && pwd)/libsluice.so"
for f in "$program" "$shim"; do
  [[ -e "$f" ]] || { echo "launch_overhead.sh: $f is missing (build the release preset)" >&2; exit 2; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
set +e
"$program" --launches 1000 --warmup 100 >/dev/null
status=$?
set -e
if ((status == 77)); then echo "launch_overhead.sh: no GPU" >&2; exit 77; fi
((status == 0)) || { echo "launch_overhead.sh: the program failed ($status)" >&2; exit 1; }

for ((i = 0; i < repeats; ++i)); do
  "$program" >>"$work/without.jsonl"
  SLUICE_GATE=open SLUICE_STATS_FILE="$work/stats.$i.json" LD_PRELOAD="$shim" "$program" >>"$work/with.jsonl"
done

mkdir -p "$(dirname "$out")"
python3 - "$work" "$out" "$shim" <<'PY'
import json, statistics, subprocess, sys, pathlib, datetime
work, out, shim = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
def driver_version():
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True).stdout.strip()
    except OSError:
        return None
def load(name):
    return [json.loads(line) for line in (work / name).read_text().splitlines() if line.strip()]
without, with_shim = load("without.jsonl"), load("with.jsonl")
if not all(r["sluice"] for r in with_shim) or any(r["sluice"] for r in without):
    sys.exit("launch_overhead.sh: LD_PRELOAD did not take effect as expected")
stats = [json.loads(p.read_text()) for p in sorted(work.glob("stats.*.json"))]
def med(rows, key):
    return statistics.median(r[key] for r in rows)
summary = {
    "what": "launch-bound loop of tiny kernels, same job, without and with LD_PRELOAD=libsluice.so (gate open)",
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "device": without[0]["device"],
    "driver": driver_version(),
    "repeats": len(without),
    "without": {k: med(without, k) for k in ("launches_per_s", "p50_us", "p99_us", "mean_us")},
    "with": {k: med(with_shim, k) for k in ("launches_per_s", "p50_us", "p99_us", "mean_us")},
    "runs": {"without": without, "with": with_shim},
    "shim_stats": {k: stats[0].get(k) for k in ("launches", "inline", "held", "unmanaged_total", "gate")} if stats else None,
}
summary["throughput_ratio"] = summary["with"]["launches_per_s"] / summary["without"]["launches_per_s"]
summary["p50_added_us"] = summary["with"]["p50_us"] - summary["without"]["p50_us"]
summary["slowdown_percent"] = (1 / summary["throughput_ratio"] - 1) * 100
out.write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps({k: summary[k] for k in ("device", "throughput_ratio", "p50_added_us", "slowdown_percent")}, indent=2))
PY
echo "launch_overhead.sh: wrote $out"
