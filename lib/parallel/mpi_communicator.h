// Communicator over MPI for CPU tensors. Error handlers are set to MPI_ERRORS_RETURN so every
// call's status is checked here and turned into a CommError naming the call, the rank and the
// group (an MPI default would abort without saying which rank or why).
#pragma once

#include <memory>
#include <string>

#include "parallel/communicator.h"

namespace moe {

// True when this process was started by mpirun / srun (so MPI should be initialised).
bool launched_by_mpi();

// "Open MPI v4.1.4": the first line of the MPI library's own version string (callable before
// MPI_Init; for run records).
std::string mpi_library_version();

// Initialises MPI (once, asking for MPI_THREAD_MULTIPLE; finalised at exit) and returns
// MPI_COMM_WORLD as a Communicator.
std::unique_ptr<Communicator> make_mpi_world();

// True when the MPI library granted MPI_THREAD_MULTIPLE (after make_mpi_world).
bool mpi_thread_multiple();

// Ends every rank of the job at once with `code` (after a rank's unrecoverable error), so no
// peer is left waiting in a collective.
[[noreturn]] void abort_mpi_job(int code);

}  // namespace moe
