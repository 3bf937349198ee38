# The outer exchange of time-dilated asynchronous SGD under 2 and 3 ranks.
add_executable(test_mpi_outer_exchange ${CMAKE_CURRENT_SOURCE_DIR}/mpi/outer_exchange_test.cpp ${CMAKE_CURRENT_SOURCE_DIR}/mpi/mpi_main.cpp)
target_link_libraries(test_mpi_outer_exchange PRIVATE moe_train doctest::doctest)
moe_mpi_test(mpi_outer_exchange_2 2 $<TARGET_FILE:test_mpi_outer_exchange>)
moe_mpi_test(mpi_outer_exchange_3 3 $<TARGET_FILE:test_mpi_outer_exchange>)
