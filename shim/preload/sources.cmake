# libsluice.so: SONAME libcuda.so.1, the whole driver ABI of cuda.h and nothing else exported.
# Everything it needs is linked in statically (fmt and nlohmann are header-only), so the file can be
# copied to a GPU machine and preloaded into any process: it needs only libc, libstdc++ and libdl.
# Pieces of the shim that unit tests link directly.
add_library(sluice_preload_support STATIC preload/real_driver.cpp)
target_include_directories(sluice_preload_support PUBLIC preload)
target_link_libraries(sluice_preload_support PUBLIC sluice_common ${CMAKE_DL_LIBS})
sluice_warnings(sluice_preload_support)

add_library(sluice SHARED
  preload/runtime.cpp
  preload/hooks.cpp
  preload/forwarders.cpp
)
add_dependencies(sluice sluice_generate_driver_api)
target_include_directories(sluice PRIVATE preload)
target_link_libraries(sluice PRIVATE sluice_core sluice_preload_support ${CMAKE_DL_LIBS} Threads::Threads)
set_target_properties(sluice PROPERTIES
  OUTPUT_NAME sluice
  NO_SONAME ON
  CXX_VISIBILITY_PRESET hidden
  VISIBILITY_INLINES_HIDDEN ON
  LINK_DEPENDS ${SLUICE_GEN_DIR}/libsluice.map)
# -Bsymbolic: the shim's own references (the addresses cuGetProcAddress hands out) bind to the shim.
# -z nodelete: a dlclose() never unmaps code that the release thread may still run.
target_link_options(sluice PRIVATE
  -Wl,-soname,libcuda.so.1
  -Wl,--version-script=${SLUICE_GEN_DIR}/libsluice.map
  -Wl,-Bsymbolic
  -Wl,-z,nodelete
  -Wl,-z,now)
if(NOT SLUICE_SANITIZE)
  target_link_options(sluice PRIVATE -Wl,--no-undefined)
endif()
sluice_warnings(sluice)
