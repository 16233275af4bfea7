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
endfunction()
