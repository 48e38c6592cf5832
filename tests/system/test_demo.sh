#!/usr/bin/env bash
# The main job on a shared directory, small: both modes migrate between two
# processes over TCP; memory must be identical and p2bmig must send far fewer
# bytes on a page-cache-heavy guest. Usage: test_demo.sh PATH_TO_P2BMIG
source "$(dirname "$0")/lib.sh"

"$P2BMIG" demo --dir "$WORK/shared" --memory 128M --disk-size 256M --workload database \
  --modes baseline,p2bmig,lazy --json >"$WORK/demo.json"
python3 - "$WORK/demo.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
runs = {r["mode"]: r for r in d["runs"]}
assert set(runs) == {"baseline", "p2bmig", "lazy"}, runs.keys()
for r in runs.values():
    for k in ("total_time_s", "downtime_s", "link_bytes", "nas_bytes", "pages_data",
              "pages_mapped", "pages_zero", "rounds", "memory_identical"):
        assert k in r, k
    assert r["memory_identical"] is True, r
b, p = runs["baseline"], runs["p2bmig"]
assert p["pages_mapped"] > 0 and b["pages_mapped"] == 0
assert p["link_bytes"] < 0.5 * b["link_bytes"], (p["link_bytes"], b["link_bytes"])
assert p["nas_bytes"] > 0 and b["nas_bytes"] == 0
assert d["store"], d
l = runs["lazy"]
for k in ("time_to_all_present_s", "faults", "fault_latency_ms_p50", "fault_latency_ms_p99",
          "memory_ops_per_s_before", "memory_ops_per_s_during", "memory_ops_per_s_after"):
    assert k in l, k
assert l["pages_mapped"] > 0 and l["memory_ops_per_s_after"] > 0, l
# Lazy total time runs until every page is present.
assert l["total_time_s"] >= l["downtime_s"] + 0 and l["time_to_all_present_s"] >= 0, l
print("demo: baseline %.2f s %d B, p2bmig %.2f s %d B" %
      (b["total_time_s"], b["link_bytes"], p["total_time_s"], p["link_bytes"]))
PY
echo "demo: PASS"
