#!/usr/bin/env bash
# Same-run launch overhead of libsluice.so on a GPU: runs the launch-bound loop of tiny kernels
# (tests/gpu/shim/launch_overhead) alternately without and with LD_PRELOAD=libsluice.so, several
# times each, on the legacy stream and on a non-blocking stream, and writes the medians and the
# ratios as JSON, with a per-call breakdown of what a launch path may cost on the machine.
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

for stream in legacy nonblocking; do
  for ((i = 0; i < repeats; ++i)); do
    "$program" --stream "$stream" >>"$work/without.$stream.jsonl"
    SLUICE_GATE=open SLUICE_STATS_FILE="$work/stats.$stream.$i.json" LD_PRELOAD="$shim" \
      "$program" --stream "$stream" >>"$work/with.$stream.jsonl"
  done
done
# What each piece of a launch path costs on this machine, without and with the shim.
"$program" --launches 20000 --breakdown >"$work/breakdown.without.json"
SLUICE_GATE=open LD_PRELOAD="$shim" "$program" --launches 20000 --breakdown >"$work/breakdown.with.json"

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
def med(rows, key):
    return statistics.median(r[key] for r in rows)
KEYS = ("launches_per_s", "p50_us", "p99_us", "mean_us")
streams = {}
for stream in ("legacy", "nonblocking"):
    without, with_shim = load(f"without.{stream}.jsonl"), load(f"with.{stream}.jsonl")
    if not all(r["sluice"] for r in with_shim) or any(r["sluice"] for r in without):
        sys.exit("launch_overhead.sh: LD_PRELOAD did not take effect as expected")
    row = {"without": {k: med(without, k) for k in KEYS}, "with": {k: med(with_shim, k) for k in KEYS},
           "runs": {"without": without, "with": with_shim}}
    row["throughput_ratio"] = row["with"]["launches_per_s"] / row["without"]["launches_per_s"]
    row["p50_added_us"] = row["with"]["p50_us"] - row["without"]["p50_us"]
    row["slowdown_percent"] = (1 / row["throughput_ratio"] - 1) * 100
    streams[stream] = row
stats = [json.loads(p.read_text()) for p in sorted(work.glob("stats.legacy.*.json"))]
legacy = streams["legacy"]
summary = {
    "what": "launch-bound loop of tiny kernels, same job, without and with LD_PRELOAD=libsluice.so (gate open); "
            "top-level figures are for the legacy stream",
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "device": legacy["runs"]["without"][0]["device"],
    "driver": driver_version(),
    "repeats": len(legacy["runs"]["without"]),
    "without": legacy["without"],
    "with": legacy["with"],
    "throughput_ratio": legacy["throughput_ratio"],
    "p50_added_us": legacy["p50_added_us"],
    "slowdown_percent": legacy["slowdown_percent"],
    "streams": streams,
    "breakdown_p50_us": {side: json.loads((work / f"breakdown.{side}.json").read_text())["breakdown_p50_us"]
                         for side in ("without", "with")},
    "shim_stats": {k: stats[0].get(k) for k in ("launches", "inline", "held", "unmanaged_total", "gate")} if stats else None,
}
out.write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps({"device": summary["device"],
                  **{f"{s}_{k}": streams[s][k] for s in streams for k in ("throughput_ratio", "p50_added_us")}},
                 indent=2))
PY
echo "launch_overhead.sh: wrote $out"
