#include "report.h"

#include <algorithm>
#include <vector>

namespace p2bmig::cli {

nlohmann::json SourceReportJson(const sim::SourceReport& r) {
  const bool p2b = r.mode != sim::Mode::kBaseline;
  return {
      {"mode", sim::ModeName(r.mode)},
      {"start_ns", r.save.start_ns},
      {"pause_ns", r.save.pause_ns},
      {"end_ns", r.save.end_ns},
      {"rounds", r.save.rounds},
      {"round_pages", r.save.round_pages},
      {"round_start_ns", r.save.round_start_ns},
      {"pages_sent", r.save.pages_sent},
      {"link_bytes", r.link_bytes},
      {"pages_data", p2b ? r.filter.pages_data : r.save.pages_sent},
      {"pages_mapped", r.filter.pages_mapped},
      {"pages_zero", r.filter.pages_zero},
      {"pages_resent", r.filter.pages_resent},
      {"mappings_invalidated", r.filter.mappings_invalidated},
      {"pages_data_window_full", r.filter.pages_data_window_full},
      {"pages_data_rewritten", r.filter.pages_data_rewritten},
      {"final_pass_s", r.filter.final_pass_s},
      {"credit_wait_s", r.filter.credit_wait_s},
      {"pause_wait_s", r.pause_wait_s},
      {"p2b_entries", r.p2b_entries_at_start},
      {"p2b_map_bytes", r.p2b_map_bytes},
      {"guest_pages",
       {{"kernel", r.memory_use.kernel},
        {"page_cache", r.memory_use.cache},
        {"anon", r.memory_use.anon},
        {"buffer", r.memory_use.buffer},
        {"free", r.memory_use.free}}},
      {"workload_ops", r.workload_ops},
      {"memory_ops_per_s", r.memory_ops_per_s},
      {"pages_served", r.pages_served},
      {"all_present_ns", r.all_present_ns},
  };
}

namespace {

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

}  // namespace

nlohmann::json TargetReportJson(const sim::TargetReport& r) {
  nlohmann::json j = {
      {"resume_ns", r.resume_ns},
      {"link_bytes", r.link_bytes},
      {"store", r.store},
      {"nas_bytes", r.resolver.nas_bytes},
      {"nas_reads", r.resolver.nas_reads},
      {"pages_written", r.pages_written},
      {"pages_data", r.resolver.pages_data},
      {"pages_mapped", r.resolver.pages_mapped},
      {"pages_zero", r.resolver.pages_zero},
      {"fetches_applied", r.resolver.fetches_applied},
      {"fetches_superseded", r.resolver.fetches_superseded},
      {"hash_mismatches", r.resolver.hash_mismatches},
      {"fetch_wait_s", r.resolver.drain_wait_s},
      {"verify_mismatches", r.verify_mismatches},
      {"lazy", r.lazy},
  };
  if (r.lazy) {
    const LazyStats& l = r.lazy_stats;
    j["all_present_ns"] = r.all_present_ns;
    j["time_to_all_present_s"] = static_cast<double>(r.all_present_ns - r.resume_ns) / 1e9;
    j["missing_at_resume"] = l.missing_at_resume;
    j["faults"] = l.faults;
    j["fault_latency_ms_p50"] = Percentile(l.fault_wait_s, 0.5) * 1e3;
    j["fault_latency_ms_p99"] = Percentile(l.fault_wait_s, 0.99) * 1e3;
    j["pages_fetched_after_resume"] = l.fetched;
    j["pages_from_source"] = l.from_source;
    j["installs_refused_present"] = l.already_present;
    j["storage_failed"] = l.storage_failures != 0;
    j["memory_ops_per_s_during"] = r.memory_ops_per_s_during;
    j["memory_ops_per_s_after"] = r.memory_ops_per_s_after;
    j["guest_writes"] = r.guest_writes.size();
  }
  return j;
}

}  // namespace p2bmig::cli
