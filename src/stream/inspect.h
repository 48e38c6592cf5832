// InspectStream: reads a whole migration stream, checks it record by record
// and prints a summary (the `p2bmig inspect` command and tests use it).
//
// Thread safety: a pure function of its arguments.

#ifndef P2BMIG_STREAM_INSPECT_H_
#define P2BMIG_STREAM_INSPECT_H_

#include <ostream>

#include <p2bmig/byte_stream.h>

namespace p2bmig {

// Reads headers and records from `in` up to and including END and writes to
// `out` the headers, the count and bytes of each record type, the pages sent
// as data, mappings and zero pages, and the number of distinct pfns; as text
// ending in "stream OK", or as one JSON object if `json`. Every PAGE_DATA and
// p2bmig record is parsed and checked. Throws Error(kMalformedStream, ...)
// naming the record index and the byte offset of the bad record; errors of
// `in` itself (truncation, network) pass through with that position added.
void InspectStream(ByteStream* in, std::ostream& out, bool json);

}  // namespace p2bmig

#endif  // P2BMIG_STREAM_INSPECT_H_
