#!/usr/bin/env bash
# Smoke test of the migration benchmark (ctest label "bench"): runs
# `bench/run.py --quick` (namespaces, shaped links, ganesha on the NAS host,
# all three modes) and checks the shape of results.json and that every run
# restored the guest's memory byte for byte. Timings are not checked.
# Usage: test_bench_quick.sh PATH_TO_P2BMIG
set -euo pipefail
P2BMIG=${1:?usage: $0 PATH_TO_P2BMIG}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(mktemp -d /tmp/p2bmig-bench-test.XXXXXX)
trap 'rm -rf "$OUT"' EXIT

/usr/bin/python3 "$ROOT/bench/run.py" --quick --p2bmig "$P2BMIG" --out "$OUT" \
  --work-dir /dev/shm/p2bmig-bench-test >"$OUT/stdout"
/usr/bin/python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
d = json.load(open(os.path.join(out, "results.json")))
assert d["complete"] is True, d.get("complete")
runs = d["runs"]
p = d["parameters"]
want = (len(p["sizes"].split(",")) * len(p["workloads"].split(",")) *
        len(p["links"].split(",")) * len(p["modes"].split(",")) * p["reps"])
assert len(runs) == want, (len(runs), want)
keys = ("workload", "link", "mode", "total_time_s", "downtime_s", "link_bytes", "nas_bytes",
        "lower_bound_s", "memory_identical")
for r in runs:
    assert r.get("ok") is True, r
    for k in keys:
        assert k in r, (k, r)
    assert r["memory_identical"] is True, r
    assert r["differing_pages"] == 0, r
    assert 0 < r["downtime_s"] < r["total_time_s"], r
    assert r["lower_bound_s"] > 0 and r["link_bytes"] > 0, r
    if r["mode"] == "baseline":
        assert r["nas_bytes"] == 0 and r["pages_mapped"] == 0, r
seen = {(r["workload"], r["mode"]) for r in runs}
assert {m for _, m in seen} == set(p["modes"].split(",")), seen
# p2bmig must actually map page cache on a page-cache-heavy workload.
fs = [r for r in runs if r["workload"] == "fileserver" and r["mode"] == "p2bmig"]
assert fs and all(r["pages_mapped"] > 0 and r["nas_bytes"] > 0 for r in fs), fs
# Lazy restore: the target took it up and reports its background phase.
lz = [r for r in runs if r["mode"] == "lazy"]
assert lz and all(r["lazy"] is True and r["time_to_all_present_s"] >= 0 and
                  r["resume_s"] <= r["total_time_s"] for r in lz), lz
md = open(os.path.join(out, "results.md")).read()
assert "| guest | link | workload | mode |" in md, md[:500]
assert any(f.endswith(".png") for f in os.listdir(out)), os.listdir(out)
print("bench quick: %d runs, all identical" % len(runs))
PY
echo "bench quick: PASS"
