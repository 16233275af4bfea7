# sluice_gtest(<target> LABELS <label>... [TIMEOUT <seconds>])
# Registers every gtest case of <target> with CTest, with the given labels (see tests/CMakeLists.txt).
#
# gtest_discover_tests() flattens list-valued properties, so the labels are applied by a second
# include file that CTest reads after the discovered tests: it labels the names in <target>_TESTS.
function(sluice_gtest target)
  cmake_parse_arguments(ARG "" "TIMEOUT" "LABELS" ${ARGN})
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  gtest_discover_tests(${target} DISCOVERY_TIMEOUT 60 TEST_LIST ${target}_TESTS
                       PROPERTIES TIMEOUT ${ARG_TIMEOUT})
  set(label_file "${CMAKE_CURRENT_BINARY_DIR}/${target}_labels.cmake")
  file(WRITE "${label_file}"
    "if(${target}_TESTS)\n"
    "  set_tests_properties(\${${target}_TESTS} PROPERTIES LABELS \"${ARG_LABELS}\")\n"
    "endif()\n")
  set_property(DIRECTORY APPEND PROPERTY TEST_INCLUDE_FILES "${label_file}")
  sluice_tier_targets(${target} ${ARG_LABELS})
endfunction()

# sluice_tier_targets(<target> <label>...)
# Records that <target> is needed by tests with these labels; sluice_tier_build_targets() then
# makes one target per tier label (sluice_tsan_tests, sluice_fuzz_tests) that builds those and
# nothing else, so that a tier of scripts/test builds only what its tests run.
function(sluice_tier_targets target)
  foreach(label IN LISTS ARGN)
    if(label STREQUAL "tsan" OR label STREQUAL "fuzz")
      set_property(GLOBAL APPEND PROPERTY SLUICE_TIER_TARGETS_${label} ${target})
    endif()
  endforeach()
endfunction()

function(sluice_tier_build_targets)
  foreach(label tsan fuzz)
    get_property(targets GLOBAL PROPERTY SLUICE_TIER_TARGETS_${label})
    add_custom_target(sluice_${label}_tests)
    if(targets)
      add_dependencies(sluice_${label}_tests ${targets})
    endif()
  endforeach()
endfunction()

# sluice_fuzzer(<name> SOURCES <file>... LIBRARIES <target>... [CORPUS <dir>] [SECONDS <n>])
# A libFuzzer target, built only in the fuzz preset (clang). CTest runs it for a bounded time over
# its seed corpus (label fuzz). Outside the fuzz preset the same sources build into a small
# replay program that feeds every corpus file once, so the harness itself stays compiled and tested.
function(sluice_fuzzer name)
  cmake_parse_arguments(ARG "" "CORPUS;SECONDS" "SOURCES;LIBRARIES" ${ARGN})
  if(NOT ARG_SECONDS)
    set(ARG_SECONDS 30)
  endif()
  if(SLUICE_BUILD_FUZZERS)
    add_executable(${name} ${ARG_SOURCES})
    sluice_tier_targets(${name} fuzz)
    target_compile_options(${name} PRIVATE -fsanitize=fuzzer)
    target_link_options(${name} PRIVATE -fsanitize=fuzzer)
    target_link_libraries(${name} PRIVATE ${ARG_LIBRARIES})
    set(work "${CMAKE_CURRENT_BINARY_DIR}/${name}_corpus")
    add_test(NAME ${name}
      COMMAND ${CMAKE_COMMAND} -E env ASAN_OPTIONS=detect_leaks=1
              sh -c "mkdir -p '${work}' && exec \"$0\" -max_total_time=${ARG_SECONDS} -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 '${work}' '${ARG_CORPUS}'"
              $<TARGET_FILE:${name}>)
    set_tests_properties(${name} PROPERTIES LABELS "fuzz" TIMEOUT ${ARG_SECONDS}0)
  elseif(ARG_CORPUS)
    add_executable(${name}_replay ${ARG_SOURCES} ${PROJECT_SOURCE_DIR}/tests/fuzz/replay_main.cpp)
    target_link_libraries(${name}_replay PRIVATE ${ARG_LIBRARIES})
    add_test(NAME ${name}_replay COMMAND ${name}_replay ${ARG_CORPUS})
    set_tests_properties(${name}_replay PROPERTIES LABELS "unit")
  endif()
endfunction()
