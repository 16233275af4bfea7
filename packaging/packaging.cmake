# The installed layout and the Debian package (docs/operations.md, "Installing").
#
#   <prefix>/bin/                     sluiced, sluicectl, sluice, sluice-ptx, sluice-trace
#   <prefix>/lib/sluice/libsluice.so  the shim; `sluice run` finds it at ../lib/sluice/ from its own
#                                     binary. A private directory on purpose: its SONAME is
#                                     libcuda.so.1, so it must never sit on the loader's path.
#   <prefix>/lib/systemd/system/      sluiced.service
#   /etc/sluice/policy.json           the example policy (a conffile in the .deb)
#   <prefix>/share/doc/sluice/        README.md, docs/*.md, example policies
#
# The executables are installed next to their targets; this file adds the rest and CPack.
# /etc/sluice is absolute: `cmake --install` without DESTDIR writes it only as root.
if(TARGET sluice)
  install(TARGETS sluice LIBRARY DESTINATION lib/sluice)
endif()

# The unit names sluiced by its installed path, which is known only at install time (`cmake
# --install --prefix`, cpack's /usr), so it is written then.
set(SLUICE_UNIT_STAGED ${PROJECT_BINARY_DIR}/packaging/sluiced.service)
install(CODE "
  set(SLUICE_BINDIR \"\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_BINDIR}\")
  set(SLUICE_DOCDIR \"\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_DATAROOTDIR}/doc/sluice\")
  configure_file(\"${PROJECT_SOURCE_DIR}/packaging/systemd/sluiced.service.in\" \"${SLUICE_UNIT_STAGED}\" @ONLY)
")
install(FILES ${SLUICE_UNIT_STAGED} DESTINATION lib/systemd/system)

# /etc/sluice whatever the prefix: the unit's ConfigurationDirectory. Under DESTDIR when set.
install(FILES ${PROJECT_SOURCE_DIR}/packaging/policy.json DESTINATION /etc/sluice)

install(FILES ${PROJECT_SOURCE_DIR}/README.md DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/sluice)
install(DIRECTORY ${PROJECT_SOURCE_DIR}/docs/ DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/sluice
        FILES_MATCHING PATTERN "*.md")
install(FILES ${PROJECT_SOURCE_DIR}/examples/policy.json DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/sluice/examples)

# ---- cpack -G DEB ----------------------------------------------------------------------------
set(SLUICE_DEB_MAINTAINER "sluice maintainers <maintainers@sluice.invalid>"
    CACHE STRING "Maintainer field of the Debian package")
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME sluice)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "sluice")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "real-time GPU work before best-effort work on a shared NVIDIA GPU")
set(CPACK_PACKAGE_DESCRIPTION
    "sluice gives real-time GPU work priority over best-effort work for unmodified frameworks: a\n"
    "preloaded shim (libsluice.so) holds, reorders and routes kernel launches, and the sluiced daemon\n"
    "decides from a JSON policy who may launch, where, and which best-effort kernels to stop.")
string(REPLACE ";" "" CPACK_PACKAGE_DESCRIPTION "${CPACK_PACKAGE_DESCRIPTION}")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${SLUICE_DEB_MAINTAINER}")
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
# Runtime libraries from dpkg-shlibdeps (zstd and lz4 are linked statically, fmt is header-only).
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# The shim's SONAME is libcuda.so.1: no shlibs entry, so the package never claims to provide it.
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS OFF)
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "nvidia-cuda-mps")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${PROJECT_SOURCE_DIR}/packaging/debian/conffiles
    ${PROJECT_SOURCE_DIR}/packaging/debian/postinst
    ${PROJECT_SOURCE_DIR}/packaging/debian/prerm
    ${PROJECT_SOURCE_DIR}/packaging/debian/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
