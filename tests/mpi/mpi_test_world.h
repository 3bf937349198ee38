// The MPI world of a multi-rank doctest binary (tests/mpi/mpi_main.cpp runs the tests on every
// rank; a test failing on any rank fails the binary on all).
#pragma once

#include "parallel/communicator.h"

namespace moe::test {

Communicator& world();

}  // namespace moe::test
