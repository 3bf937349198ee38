// runs/<run-id>/metrics.csv: one row of scalars per step, flushed as it is written so a crashed
// run keeps its curve. Columns are fixed when the file is opened; a resumed run appends (and
// drops rows at or after its start step, so the file never holds a step twice).
#pragma once

#include <cstdint>
#include <fstream>
#include <map>
#include <string>
#include <vector>

namespace moe {

class MetricsLog {
   public:
    MetricsLog(std::string path, std::vector<std::string> columns, int64_t resume_step = -1);
    // Missing columns are written empty.
    void append(const std::map<std::string, double>& row);
    const std::string& path() const { return path_; }

   private:
    std::string path_;
    std::vector<std::string> columns_;
    std::ofstream out_;
};

}  // namespace moe
