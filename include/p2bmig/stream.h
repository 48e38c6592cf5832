// Reading and writing migration streams, and the RecordSink interface through
// which every stage of a migration pipeline passes records on:
//
//   source: save loop -> Filter -> StreamWriter -> ByteStream
//   target: ByteStream -> StreamReader -> Resolver -> restore (or StreamWriter)
//
// Thread safety: a reader or writer is used by one thread at a time.

#ifndef P2BMIG_STREAM_H_
#define P2BMIG_STREAM_H_

#include <cstdint>

#include <p2bmig/byte_stream.h>
#include <p2bmig/records.h>

namespace p2bmig {

// A stage that consumes a stream: headers first, then records, the last of
// which is END. Errors are thrown (Error).
class RecordSink {
 public:
  RecordSink() = default;
  RecordSink(const RecordSink&) = delete;
  RecordSink& operator=(const RecordSink&) = delete;
  virtual ~RecordSink() = default;

  virtual void WriteHeaders(const ImageHeader& image, const DomainHeader& domain) = 0;
  virtual void WriteRecord(const Record& record) = 0;
};

// Reads a stream from a ByteStream, checking framing and limits.
class StreamReader {
 public:
  explicit StreamReader(ByteStream* in, StreamLimits limits = {});

  // REQUIRES: called once, before ReadRecord.
  void ReadHeaders(ImageHeader* image, DomainHeader* domain);

  // Reads the next record (padding checked and dropped). Throws Error.
  void ReadRecord(Record* record);

  const StreamLimits& limits() const { return limits_; }
  uint64_t records_read() const { return records_read_; }

 private:
  ByteStream* in_;
  StreamLimits limits_;
  uint64_t records_read_ = 0;
};

// Writes a stream to a ByteStream (adds padding to 8 bytes).
class StreamWriter : public RecordSink {
 public:
  explicit StreamWriter(ByteStream* out) : out_(out) {}
  void WriteHeaders(const ImageHeader& image, const DomainHeader& domain) override;
  void WriteRecord(const Record& record) override;  // flushes after END

 private:
  ByteStream* out_;
};

// Reads headers and records from `reader` into `sink` up to and including
// END; stops there without reading further (what follows belongs to libxl).
// Returns the number of records passed.
uint64_t Pump(StreamReader* reader, RecordSink* sink);

}  // namespace p2bmig

#endif  // P2BMIG_STREAM_H_
