// runs/<run-id>/record.yaml: what ran and what it measured. Written when the run starts
// (status: running), rewritten at the end with status completed / failed / interrupted and the
// summary. Every write goes to a temporary file that is fsynced and renamed over the record, so a
// reader never sees half a record.
#pragma once

#include <yaml-cpp/yaml.h>

#include <string>

namespace moe {

class RunRecord {
   public:
    // `dir` is the run directory (created if missing). Writes nothing until write().
    explicit RunRecord(std::string dir);

    YAML::Node& root() { return root_; }
    const std::string& dir() const { return dir_; }
    std::string path() const { return dir_ + "/record.yaml"; }

    void write() const;

   private:
    std::string dir_;
    YAML::Node root_;
};

// Local time as ISO 8601 with offset, e.g. 2026-11-23T10:04:05+0000.
std::string iso_time_now();

}  // namespace moe
