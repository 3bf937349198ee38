# The MPI communicator under 2 and 3 ranks.
add_executable(test_mpi_comm ${CMAKE_CURRENT_SOURCE_DIR}/mpi/comm_test.cpp ${CMAKE_CURRENT_SOURCE_DIR}/mpi/mpi_main.cpp)
target_link_libraries(test_mpi_comm PRIVATE moe_train doctest::doctest)
moe_mpi_test(mpi_comm_2 2 $<TARGET_FILE:test_mpi_comm>)
moe_mpi_test(mpi_comm_3 3 $<TARGET_FILE:test_mpi_comm>)
# Gradient averaging overlapped with backward under 2 and 3 ranks.
add_executable(test_mpi_grad_sync ${CMAKE_CURRENT_SOURCE_DIR}/mpi/grad_sync_test.cpp ${CMAKE_CURRENT_SOURCE_DIR}/mpi/mpi_main.cpp)
target_link_libraries(test_mpi_grad_sync PRIVATE moe_train doctest::doctest)
moe_mpi_test(mpi_grad_sync_2 2 $<TARGET_FILE:test_mpi_grad_sync>)
moe_mpi_test(mpi_grad_sync_3 3 $<TARGET_FILE:test_mpi_grad_sync>)
