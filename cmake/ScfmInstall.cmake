# Installation: library, headers, CLI; pkg-config and CMake package files are
# added by the install work (see tests/install).
install(TARGETS scfm scfm_cli
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY include/scfm DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
