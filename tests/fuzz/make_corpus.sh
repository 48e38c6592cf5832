#!/usr/bin/env bash
# Makes the fuzzers' seed corpus in OUT_DIR (scripts/fuzz.sh runs it):
#   OUT_DIR/disk.img   the disk image the seeds' mappings refer to (the
#                      resolver fuzzer reads it via P2BMIG_FUZZ_DISK)
#   OUT_DIR/seeds/     small hand-made streams, and real streams written by
#                      `p2bmig send` (p2bmig and baseline modes), cut down to
#                      a few hundred KiB at record boundaries, plus raw
#                      prefixes of them (streams that end early)
# Usage: make_corpus.sh OUT_DIR MAKE_FUZZ_SEEDS [P2BMIG]
# Without P2BMIG (the project's binary) only the hand-made seeds are made.
# FUZZ_KEEP_STREAMS=1 keeps the full streams in OUT_DIR/streams/.
set -euo pipefail

out=${1:?usage: make_corpus.sh OUT_DIR MAKE_FUZZ_SEEDS [P2BMIG]}
seeder=${2:?usage: make_corpus.sh OUT_DIR MAKE_FUZZ_SEEDS [P2BMIG]}
p2bmig=${3:-}
budget=$((256 * 1024))

rm -rf "$out/seeds" "$out/streams"
mkdir -p "$out/seeds" "$out/streams"
"$seeder" disk "$out/disk.img"

if [ -n "$p2bmig" ]; then
  # `send` runs a workload that writes to the disk: the image the last run
  # leaves behind is the one the p2bmig stream's mappings describe.
  for mode in baseline p2bmig; do
    "$p2bmig" send --output "$out/streams/$mode.stream" --disk "$out/disk.img" \
      --memory 64M --rate off --mode "$mode" >/dev/null
    "$seeder" trim "$out/streams/$mode.stream" "$out/seeds/send-$mode" "$budget"
    head -c $((budget / 4)) "$out/streams/$mode.stream" >"$out/seeds/send-$mode-prefix"
  done
  [ -n "${FUZZ_KEEP_STREAMS:-}" ] || rm -rf "$out/streams"
else
  echo "make_corpus: no p2bmig binary given, hand-made seeds only" >&2
fi

"$seeder" seeds "$out/disk.img" "$out/seeds"
echo "make_corpus: $(ls "$out/seeds" | wc -l) seeds in $out/seeds"
