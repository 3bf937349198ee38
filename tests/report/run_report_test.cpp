// moe-eval's Markdown run report (lib/report/run_report.cpp).
#include <doctest/doctest.h>

#include <fstream>

#include "common/error.h"
#include "report/run_report.h"
#include "temp_dir.h"

using namespace moe;
using moe::test::TempDir;

TEST_CASE("the run report tabulates runs, draws their loss curves and eval losses, and the expert load") {
    TempDir dir("moe_report_test");
    for (const char* id : {"run-a", "run-b"}) {
        dir.write(std::string(id) + "/record.yaml", fmt::format(R"(run_id: {}
status: completed
summary:
  steps: 4
  tokens: 4096
  tokens_per_s: 1000
  final_train_loss: 1.5
  final_eval_loss: 1.25
  entropy_bound: 1.125
  eval_loss_over_bound: 1.111
  expert_load:
    - layer: 0
      share: [0.25, 0.75]
      dropped_fraction: 0.5
)", id));
        dir.write(std::string(id) + "/metrics.csv",
                  "step,loss,eval_loss\n0,3.0,\n1,2.5,2.25\n2,2.0,\n3,1.5,1.25\n");
    }
    const std::string md = run_report_markdown({dir.path("run-a"), dir.path("run-b")});
    CAPTURE(md);
    CHECK(md.find("| `run-a` | completed | 4 | 4096 | 1000 | 1.5000 | 1.2500 | 1.1250 | 1.111 |") != std::string::npos);
    CHECK(md.find("| `run-b` |") != std::string::npos);
    CHECK(md.find("line [3.0000, 2.5000, 2.0000, 1.5000]") != std::string::npos);
    CHECK(md.find("| 2 | 2.2500 | 2.2500 |") != std::string::npos);   // eval after step 2 (index 1)
    CHECK(md.find("bar [0.25, 0.75]") != std::string::npos);
    CHECK(md.find("| 0 | 0.250 | 0.750 | 0.5000 |") != std::string::npos);

    CHECK_THROWS_WITH_AS(run_report_markdown({dir.path("absent")}), doctest::Contains("absent/record.yaml"), Error);
}
