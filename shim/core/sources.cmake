# sluice_core: the deferral engine. Tests link it directly against a mock or the fake driver.
add_library(sluice_core STATIC
  core/engine.cpp
  core/launch.cpp
  core/copies.cpp
  core/catalog.cpp
  core/function_state.cpp
  core/route.cpp
  core/gate.cpp
  core/stats.cpp
  core/toggle_gate.cpp
  core/module_image.cpp
  core/kill.cpp
  core/twins.cpp
  core/ptx_sources.cpp
  core/embedded_ptx.cpp
)
target_include_directories(sluice_core PUBLIC include PRIVATE core)
target_link_libraries(sluice_core
  PUBLIC sluice_driver_api sluice_common Threads::Threads
  PRIVATE sluice_ptx nlohmann_json::nlohmann_json)
sluice_warnings(sluice_core)
