#include "sim/fetch_credits.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <deque>
#include <exception>
#include <optional>

#include <fmt/format.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <p2bmig/save_loop.h>
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
        uint64_t v;
        std::memcpy(&v, buf, sizeof(v));
        std::lock_guard lock(mu_);
        if (v == kCommitWord) {
          committed_ = true;  // the last word; the target closes next
        } else if (!lazy_ && v == kLazyMarker) {
          lazy_ = true;
        } else if (!lazy_) {
          fetched_ = std::max(fetched_, v);
        } else {
          uint32_t type, count;
          std::memcpy(&type, buf, 4);
          std::memcpy(&count, buf + 4, 4);
          if (type == kMsgAllPresent && count == 0) {
            all_present_ = true;
          } else if (type == kMsgPageRequest && count > 0 && count <= kMaxRequestPfns) {
            std::vector<Pfn> pfns(count);
            // Reading under mu_ is fine: only the waits contend, and they
            // wait for this very message.
            link_->ReadExact(pfns.data(), count * sizeof(Pfn));
            requests_.push_back(std::move(pfns));
          } else {
            break;  // not ours: treat as a broken link (no commit)
          }
        }
        cv_.notify_all();
      } catch (const std::exception&) {
        break;  // closed or failed: the stream's own writes report failures
      }
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

ServeStats CreditReceiver::ServeLazy(Domain* domain, RecordSink* out) {
  ServeStats st;
  {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return lazy_ || committed_ || ended_; });
    if (!lazy_) {
      if (committed_) return st;  // restored in paper mode: nothing to serve
      throw Error(ErrorKind::kNetwork,
                  "the target closed the connection after END without taking the guest");
    }
  }
  st.lazy = true;
  // From this record on the target may run the guest: ours must stay paused,
  // whatever happens to the connection.
  acknowledged_ = true;
  out->WriteRecord(Record{rec::kP2bLazyResume, std::vector<uint8_t>(8, 0)});
  link_->Flush();
  std::vector<uint8_t> buf;
  for (;;) {
    std::vector<Pfn> pfns;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return !requests_.empty() || all_present_ || ended_; });
      if (!requests_.empty()) {
        pfns = std::move(requests_.front());
        requests_.pop_front();
      } else if (all_present_) {
        st.all_present_ns = RealtimeNs();
        break;
      } else {
        throw Error(ErrorKind::kNetwork,
                    "the target was lost before it had every page of the guest; the guest stays "
                    "paused here (the target may have run it since, so resuming it could fork "
                    "it)");
      }
    }
    ++st.requests;
    for (Pfn pfn : pfns) {
      if (pfn >= domain->nr_pfns()) {
        throw Error(ErrorKind::kMalformedStream,
                    fmt::format("the target asked for pfn {:#x}, beyond the guest", pfn));
      }
    }
    // The guest is paused: this is its memory at the pause.
    for (size_t i = 0; i < pfns.size(); i += 1024) {
      size_t n = std::min<size_t>(1024, pfns.size() - i);
      buf.resize(n * kPageSize);
      domain->ReadPages(std::span<const Pfn>(pfns.data() + i, n), buf.data());
      PageDataBuilder b;
      for (size_t j = 0; j < n; ++j)
        b.Add(pfns[i + j], page_type::kNotab, buf.data() + j * kPageSize);
      out->WriteRecord(b.Finish());
    }
    link_->Flush();
    st.pages_served += pfns.size();
  }
  out->WriteRecord(Record{rec::kEnd, {}});  // flushes
  return st;
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

namespace p2bmig::sim {

SourceLink::SourceLink(ByteStream* link, const StreamLimits& limits)
    : link_(link), limits_(limits) {
  event_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (event_fd_ < 0) throw Error(ErrorKind::kInternal, "eventfd failed");
  uint64_t marker = kLazyMarker;
  try {
    link_->WriteAll(&marker, sizeof(marker));
    link_->Flush();
  } catch (const std::exception&) {
    write_failed_ = true;
  }
  reader_ = std::thread([this] {
    StreamReader reader(link_, limits_);
    try {
      // First the source's acknowledgement: it keeps its guest paused.
      Record ack;
      reader.ReadRecord(&ack);
      if (ack.type != rec::kP2bLazyResume) {
        throw Error(ErrorKind::kMalformedStream, "the source did not acknowledge lazy restore");
      }
      {
        std::lock_guard lock(mu_);
        acknowledged_ = true;
        cv_.notify_all();
      }
      for (;;) {
        Record r;
        reader.ReadRecord(&r);
        if (r.type == rec::kEnd) {
          std::lock_guard lock(mu_);
          end_seen_ = true;
          break;
        }
        if (r.type != rec::kPageData) {
          throw Error(ErrorKind::kMalformedStream, "unexpected record after END");
        }
        ParsePageData(r, limits_);  // checked here, applied by TakePages
        std::lock_guard lock(mu_);
        pages_.push_back(std::move(r));
        Signal();
      }
    } catch (const std::exception&) {
      // Closed or failed: the source is gone.
    }
    std::lock_guard lock(mu_);
    ended_ = true;
    cv_.notify_all();
    Signal();
  });
}

bool SourceLink::WaitForEnd() {
  if (!all_present_sent_) Abandon();
  if (reader_.joinable()) reader_.join();
  std::lock_guard lock(mu_);
  return end_seen_;
}

bool SourceLink::WaitForAcknowledgement() {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return acknowledged_ || ended_; });
  return acknowledged_;
}

SourceLink::~SourceLink() {
  // Without our report the source waits for us: let it go.
  if (!all_present_sent_) Abandon();
  if (reader_.joinable()) reader_.join();
  ::close(event_fd_);
}

void SourceLink::Signal() {
  uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(event_fd_, &one, sizeof(one));
}

bool SourceLink::Send(uint32_t type, std::span<const Pfn> pfns) {
  if (write_failed_) return false;
  std::vector<uint8_t> msg(8 + pfns.size() * sizeof(Pfn));
  auto count = static_cast<uint32_t>(pfns.size());
  std::memcpy(msg.data(), &type, 4);
  std::memcpy(msg.data() + 4, &count, 4);
  if (!pfns.empty()) std::memcpy(msg.data() + 8, pfns.data(), pfns.size() * sizeof(Pfn));
  try {
    link_->WriteAll(msg.data(), msg.size());
    link_->Flush();
  } catch (const std::exception&) {
    write_failed_ = true;
  }
  return !write_failed_;
}

bool SourceLink::Request(std::span<const Pfn> pfns) {
  for (size_t i = 0; i < pfns.size(); i += kMaxRequestPfns) {
    if (!Send(kMsgPageRequest,
              pfns.subspan(i, std::min<size_t>(kMaxRequestPfns, pfns.size() - i)))) {
      return false;
    }
  }
  return alive();
}

void SourceLink::TakePages(const PageFn& fn) {
  std::deque<Record> pages;
  {
    std::lock_guard lock(mu_);
    pages.swap(pages_);
  }
  uint64_t count;
  while (::read(event_fd_, &count, sizeof(count)) > 0) {
  }
  for (const Record& r : pages) {
    PageDataView view = ParsePageData(r, limits_);
    for (size_t i = 0; i < view.pages.size(); ++i) {
      if (const uint8_t* data = view.PageData(i)) fn(view.pages[i].pfn, data);
    }
  }
}

bool SourceLink::alive() const {
  std::lock_guard lock(mu_);
  return !ended_ && !write_failed_;
}

void SourceLink::AllPresent() { all_present_sent_ = Send(kMsgAllPresent, {}); }

void SourceLink::Abandon() {
  try {
    link_->CloseWrite();
  } catch (const std::exception&) {
  }
}

}  // namespace p2bmig::sim
