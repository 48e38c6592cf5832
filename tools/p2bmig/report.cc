#include "report.h"

namespace p2bmig::cli {

nlohmann::json SourceReportJson(const sim::SourceReport& r) {
  const bool p2b = r.mode == sim::Mode::kP2bmig;
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
  };
}

nlohmann::json TargetReportJson(const sim::TargetReport& r) {
  return {
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
  };
}

}  // namespace p2bmig::cli
