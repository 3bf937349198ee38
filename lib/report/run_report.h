// `moe-eval report`: one Markdown page comparing runs from their run directories (record.yaml
// and metrics.csv): a summary table, the training-loss curves and eval losses, and each run's
// expert load, with charts as Mermaid xychart blocks (rendered by GitHub and most viewers).
#pragma once

#include <string>
#include <vector>

namespace moe {

// Throws Error naming the directory and file when a run directory has no readable record.
std::string run_report_markdown(const std::vector<std::string>& run_dirs);

}  // namespace moe
