// JSON forms of the source's and the target's reports, as `send --json` and
// `receive --json` print them and `demo` reads them back.

#ifndef P2BMIG_TOOLS_REPORT_H_
#define P2BMIG_TOOLS_REPORT_H_

#include <nlohmann/json.hpp>

#include "sim/sim_host.h"

namespace p2bmig::cli {

nlohmann::json SourceReportJson(const sim::SourceReport& r);
nlohmann::json TargetReportJson(const sim::TargetReport& r);

}  // namespace p2bmig::cli

#endif  // P2BMIG_TOOLS_REPORT_H_
