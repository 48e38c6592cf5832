#include "sim/fetch_credits.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <deque>
#include <exception>
#include <optional>

#include <p2bmig/stream.h>

namespace p2bmig::sim {
namespace {

constexpr auto kIdleTick = std::chrono::milliseconds(2);
constexpr size_t kMaxQueuedRecords = 64;
// Records read ahead of the resolver, in bytes of body: with records of up
// to 16 MiB (StreamLimits), the count alone would allow 1 GiB.
constexpr size_t kMaxQueuedBytes = 32u << 20;

}  // namespace

CreditReceiver::CreditReceiver(ByteStream* link) : link_(link) {
  reader_ = std::thread([this] {
    for (;;) {
      uint8_t buf[8];
      try {
        link_->ReadExact(buf, sizeof(buf));
      } catch (const std::exception&) {
        break;  // closed or failed: the stream's own writes report failures
      }
      uint64_t v;
      std::memcpy(&v, buf, sizeof(v));
      std::lock_guard lock(mu_);
      if (v == kCommitWord) {
        committed_ = true;
        continue;
      }
      fetched_ = std::max(fetched_, v);
      cv_.notify_all();
    }
    std::lock_guard lock(mu_);
    ended_ = true;
    cv_.notify_all();
  });
}

CreditReceiver::~CreditReceiver() {
  if (reader_.joinable()) reader_.join();
}

void CreditReceiver::WaitForFetched(uint64_t n) {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return fetched_ >= n || ended_; });
}

uint64_t CreditReceiver::Fetched() {
  std::lock_guard lock(mu_);
  return fetched_;
}

void CreditReceiver::WaitForEnd() {
  if (reader_.joinable()) reader_.join();
}

bool CreditReceiver::committed() {
  std::lock_guard lock(mu_);
  return committed_;
}

void SendCommit(ByteStream* link) {
  uint8_t buf[8];
  const uint64_t word = kCommitWord;
  std::memcpy(buf, &word, sizeof(buf));
  link->WriteAll(buf, sizeof(buf));
  link->Flush();
}

void CreditReceiver::Abandon() {
  try {
    link_->CloseWrite();
  } catch (const std::exception&) {
  }
  WaitForEnd();
}

void ReceiveWithCredits(ByteStream* link, const StreamLimits& limits, Resolver* resolver,
                        bool send_credits, const std::function<void(uint32_t, bool)>& on_record,
                        ReceiveStats* stats) {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Record> queue;
  size_t queued_bytes = 0;
  bool done = false;  // the reader has stopped (after END or an error)
  std::exception_ptr error;
  ImageHeader image;
  DomainHeader domain;
  StreamReader reader(link, limits);
  reader.ReadHeaders(&image, &domain);
  resolver->WriteHeaders(image, domain);

  std::thread thread([&] {
    try {
      for (;;) {
        Record r;
        reader.ReadRecord(&r);
        bool end = r.type == rec::kEnd;
        std::unique_lock lock(mu);
        // One record always fits, however large (within StreamLimits).
        cv.wait(lock, [&] {
          return (queue.size() < kMaxQueuedRecords &&
                  (queue.empty() || queued_bytes + r.body.size() <= kMaxQueuedBytes)) ||
                 done;
        });
        if (done) return;  // the consumer gave up
        queued_bytes += r.body.size();
        if (stats) stats->peak_queued_bytes = std::max(stats->peak_queued_bytes, queued_bytes);
        queue.push_back(std::move(r));
        cv.notify_all();
        if (end) break;
      }
    } catch (...) {
      std::lock_guard lock(mu);
      error = std::current_exception();
    }
    std::lock_guard lock(mu);
    done = true;
    cv.notify_all();
  });

  uint64_t credited = 0;
  auto consume = [&]() {
    for (;;) {
      std::optional<Record> r;
      {
        std::unique_lock lock(mu);
        cv.wait_for(lock, kIdleTick, [&] { return !queue.empty() || done; });
        if (!queue.empty()) {
          r = std::move(queue.front());
          queue.pop_front();
          queued_bytes -= r->body.size();
          cv.notify_all();
        } else if (done) {
          if (error) std::rethrow_exception(error);
          return;
        }
      }
      if (r) {
        if (on_record) on_record(r->type, true);
        resolver->WriteRecord(*r);
        if (on_record) on_record(r->type, false);
        if (r->type == rec::kEnd) return;
      } else {
        resolver->Progress();
      }
      uint64_t fetched = resolver->mappings_fetched();
      // Only a source that asked reads them: to any other, credits would
      // fill the connection's buffer and block us.
      if (send_credits && resolver->credits_wanted() && fetched != credited) {
        uint8_t buf[8];
        std::memcpy(buf, &fetched, sizeof(buf));
        link->WriteAll(buf, sizeof(buf));
        credited = fetched;
      }
    }
  };
  try {
    consume();
  } catch (...) {
    {
      std::lock_guard lock(mu);
      done = true;
      cv.notify_all();
    }
    // The reader may be blocked on the link: closing our side makes the
    // source fail and close, which ends the read.
    try {
      link->CloseWrite();
    } catch (const std::exception&) {
    }
    thread.join();
    throw;
  }
  thread.join();
}

}  // namespace p2bmig::sim
