// Configuration sections whose feature has not landed in this build yet: enabling one is an
// error that says so, never silently ignored. One table; entries go as features land.
#pragma once

#include "config/config.h"

namespace moe {

void reject_unavailable_features(const Config& cfg);

}  // namespace moe
