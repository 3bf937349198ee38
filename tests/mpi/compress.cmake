# SVD swarm-consensus compression under 2 and 3 ranks.
add_executable(test_mpi_compress ${CMAKE_CURRENT_SOURCE_DIR}/mpi/compress_test.cpp ${CMAKE_CURRENT_SOURCE_DIR}/mpi/mpi_main.cpp)
target_link_libraries(test_mpi_compress PRIVATE moe_train doctest::doctest)
moe_mpi_test(mpi_compress_2 2 $<TARGET_FILE:test_mpi_compress>)
moe_mpi_test(mpi_compress_3 3 $<TARGET_FILE:test_mpi_compress>)
