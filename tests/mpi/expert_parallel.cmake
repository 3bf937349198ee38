# The all-to-all expert dispatcher at the layer level under 2 and 4 ranks.
add_executable(test_mpi_expert_parallel ${CMAKE_CURRENT_SOURCE_DIR}/mpi/expert_parallel_test.cpp
               ${CMAKE_CURRENT_SOURCE_DIR}/mpi/mpi_main.cpp)
target_link_libraries(test_mpi_expert_parallel PRIVATE moe_train doctest::doctest)
moe_mpi_test(mpi_expert_parallel_2 2 $<TARGET_FILE:test_mpi_expert_parallel>)
moe_mpi_test(mpi_expert_parallel_4 4 $<TARGET_FILE:test_mpi_expert_parallel>)
