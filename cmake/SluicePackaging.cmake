# Installation layout and the Debian package: packaging/packaging.cmake.
include(${PROJECT_SOURCE_DIR}/packaging/packaging.cmake)
