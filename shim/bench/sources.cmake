# sluice_shim_bench: launch overhead of the engine and of libsluice.so (scripts/bench_shim runs it).
add_executable(sluice_shim_bench bench/launch_bench.cpp)
target_link_libraries(sluice_shim_bench PRIVATE sluice_core benchmark::benchmark ${CMAKE_DL_LIBS})
target_compile_definitions(sluice_shim_bench PRIVATE
  SLUICE_BENCH_FAKE_DRIVER="${CMAKE_BINARY_DIR}/fake/libcuda.so.1"
  SLUICE_BENCH_SHIM="$<TARGET_FILE:sluice>")
add_dependencies(sluice_shim_bench sluice)
sluice_warnings(sluice_shim_bench)
