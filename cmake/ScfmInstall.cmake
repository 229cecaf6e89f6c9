# Installation: libscfm (shared, with SOVERSION), the public headers, the scfm
# CLI, a pkg-config file and a relocatable CMake package, so another program
# can build against scfm with `pkg-config --cflags --libs scfm` or with
# `find_package(scfm)` and the target scfm::scfm (tests/install checks both).
#
# Layout under the prefix:
#   lib/libscfm.so{,.MAJOR,.VERSION}     bin/scfm     include/scfm/*.h
#   lib/pkgconfig/scfm.pc
#   lib/cmake/scfm/scfm{Config,ConfigVersion,Targets,Targets-<config>}.cmake
#
# The public headers include only <stddef.h>, <stdint.h>, <stdio.h> and each
# other, and libscfm links its dependencies (OpenBLAS, HDF5, libconfig, MPI,
# OpenMP) privately, so a consumer needs only the include directory and
# -lscfm: the exported target carries no dependency, and scfm.pc lists the
# dependencies only under Libs.private (for static-style link checks).
include(CMakePackageConfigHelpers)

set(SCFM_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/scfm)
set(SCFM_INSTALL_PKGCONFIGDIR ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

# Installed programs find libscfm next to them, wherever the prefix is
# (`cmake --install --prefix` chooses it after configuration), and OpenBLAS in
# its Debian alternatives directory, which is not on the default search path.
file(RELATIVE_PATH _scfm_bin_to_lib
  ${CMAKE_INSTALL_FULL_BINDIR} ${CMAKE_INSTALL_FULL_LIBDIR})
set_target_properties(scfm_cli PROPERTIES
  INSTALL_RPATH "$ORIGIN/${_scfm_bin_to_lib};${SCFM_OPENBLAS_DIR}")
unset(_scfm_bin_to_lib)
set_target_properties(scfm PROPERTIES EXPORT_NAME scfm)

install(TARGETS scfm EXPORT scfmTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT runtime NAMELINK_COMPONENT development
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT development
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT runtime
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS scfm_cli
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT runtime)
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/scfm
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT development
  FILES_MATCHING PATTERN "*.h")

# ---- CMake package: find_package(scfm) -> scfm::scfm -----------------------
install(EXPORT scfmTargets
  NAMESPACE scfm::
  DESTINATION ${SCFM_INSTALL_CMAKEDIR}
  COMPONENT development)
configure_package_config_file(
  ${PROJECT_SOURCE_DIR}/cmake/scfmConfig.cmake.in
  ${PROJECT_BINARY_DIR}/cmake/scfmConfig.cmake
  INSTALL_DESTINATION ${SCFM_INSTALL_CMAKEDIR})
# 0.x: a minor release may change the API, so only the same MAJOR.MINOR matches.
write_basic_package_version_file(
  ${PROJECT_BINARY_DIR}/cmake/scfmConfigVersion.cmake
  VERSION ${PROJECT_VERSION}
  COMPATIBILITY SameMinorVersion)
install(FILES
  ${PROJECT_BINARY_DIR}/cmake/scfmConfig.cmake
  ${PROJECT_BINARY_DIR}/cmake/scfmConfigVersion.cmake
  DESTINATION ${SCFM_INSTALL_CMAKEDIR}
  COMPONENT development)

# ---- pkg-config: scfm.pc ---------------------------------------------------
# Libs.private: the dependencies of libscfm as -L/-l flags (full library paths
# from the find modules are split; anything else is kept as it is).
set(_scfm_pc_private "")
foreach(_lib ${SCFM_OPENBLAS_LIBRARY} ${HDF5_C_LIBRARIES} ${LIBCONFIG_LDFLAGS}
             ${MPI_C_LIBRARIES} ${OpenMP_C_FLAGS} -lm)
  if(TARGET ${_lib})
    continue()
  elseif(IS_ABSOLUTE "${_lib}" AND _lib MATCHES "/lib([^/]+)\\.(so|a)$")
    get_filename_component(_dir ${_lib} DIRECTORY)
    set(_name ${CMAKE_MATCH_1})
    if(NOT _dir MATCHES "^(/usr)?/lib(64)?(/${CMAKE_LIBRARY_ARCHITECTURE})?$")
      list(APPEND _scfm_pc_private "-L${_dir}")
    endif()
    list(APPEND _scfm_pc_private "-l${_name}")
  elseif(_lib MATCHES "^-L(/usr)?/lib(64)?(/${CMAKE_LIBRARY_ARCHITECTURE})?$")
    continue()  # default search path
  else()
    list(APPEND _scfm_pc_private "${_lib}")
  endif()
endforeach()
list(REMOVE_DUPLICATES _scfm_pc_private)
list(JOIN _scfm_pc_private " " SCFM_PC_LIBS_PRIVATE)
unset(_scfm_pc_private)
unset(_lib)
unset(_dir)
unset(_name)

# The prefix is only known at install time (`cmake --install --prefix P`), so
# scfm.pc is configured in two steps: now with everything but the prefix, then
# by the install script with the prefix it installs to (absolute paths, so the
# -Wl,-rpath in Libs names the real library directory).
set(SCFM_PC_PREFIX "@SCFM_PC_PREFIX@")
foreach(_kind LIBDIR INCLUDEDIR)
  if(IS_ABSOLUTE "${CMAKE_INSTALL_${_kind}}")
    set(SCFM_PC_${_kind} "${CMAKE_INSTALL_${_kind}}")
  else()
    set(SCFM_PC_${_kind} "\${prefix}/${CMAKE_INSTALL_${_kind}}")
  endif()
endforeach()
unset(_kind)
configure_file(${PROJECT_SOURCE_DIR}/cmake/scfm.pc.in
  ${PROJECT_BINARY_DIR}/cmake/scfm.pc.stage @ONLY)
unset(SCFM_PC_PREFIX)
install(CODE "
  set(SCFM_PC_PREFIX \"\${CMAKE_INSTALL_PREFIX}\")
  set(_scfm_pc_dir \"${SCFM_INSTALL_PKGCONFIGDIR}\")
  if(NOT IS_ABSOLUTE \"\${_scfm_pc_dir}\")
    set(_scfm_pc_dir \"\${CMAKE_INSTALL_PREFIX}/\${_scfm_pc_dir}\")
  endif()
  set(_scfm_pc \"\$ENV{DESTDIR}\${_scfm_pc_dir}/scfm.pc\")
  message(STATUS \"Installing: \${_scfm_pc}\")
  configure_file(\"${PROJECT_BINARY_DIR}/cmake/scfm.pc.stage\" \"\${_scfm_pc}\" @ONLY)
  list(APPEND CMAKE_INSTALL_MANIFEST_FILES \"\${_scfm_pc}\")
  unset(_scfm_pc)
  unset(_scfm_pc_dir)
  unset(SCFM_PC_PREFIX)
" COMPONENT development)
