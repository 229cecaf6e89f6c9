# Finds the fixed dependencies and gathers them in the interface target scfm_deps.
find_package(PkgConfig REQUIRED)
find_package(OpenMP REQUIRED COMPONENTS C)
find_package(MPI REQUIRED COMPONENTS C)

# OpenBLAS: prefer Debian's OpenMP build (libopenblas-openmp-dev); the generic
# libblas.so.3 may be the 30x slower reference BLAS, so never fall back to it.
find_library(SCFM_OPENBLAS_LIBRARY NAMES openblas
  PATHS /usr/lib/x86_64-linux-gnu/openblas-openmp /usr/lib/aarch64-linux-gnu/openblas-openmp
  NO_DEFAULT_PATH)
if(NOT SCFM_OPENBLAS_LIBRARY)
  message(WARNING "OpenMP build of OpenBLAS not found (apt install libopenblas-openmp-dev); trying any libopenblas")
  find_library(SCFM_OPENBLAS_LIBRARY NAMES openblas REQUIRED)
endif()
get_filename_component(SCFM_OPENBLAS_DIR ${SCFM_OPENBLAS_LIBRARY} DIRECTORY)
find_path(SCFM_CBLAS_INCLUDE_DIR cblas.h
  PATHS /usr/include/x86_64-linux-gnu/openblas-openmp /usr/include/aarch64-linux-gnu/openblas-openmp
        /usr/include/openblas
  REQUIRED)

# Parallel HDF5 (libhdf5-openmpi-dev).
set(HDF5_PREFER_PARALLEL ON)
find_package(HDF5 REQUIRED COMPONENTS C)
if(NOT HDF5_IS_PARALLEL)
  message(FATAL_ERROR "HDF5 was found but it is not the parallel build (apt install libhdf5-openmpi-dev)")
endif()

find_package(ZLIB REQUIRED)  # Matrix Market .mtx.gz and .tsv.gz
pkg_check_modules(LIBCONFIG REQUIRED IMPORTED_TARGET libconfig)
pkg_check_modules(CUNIT REQUIRED IMPORTED_TARGET cunit)

add_library(scfm_deps INTERFACE)
target_include_directories(scfm_deps INTERFACE ${SCFM_CBLAS_INCLUDE_DIR} ${HDF5_C_INCLUDE_DIRS})
target_compile_definitions(scfm_deps INTERFACE ${HDF5_C_DEFINITIONS})
target_link_libraries(scfm_deps INTERFACE
  ${SCFM_OPENBLAS_LIBRARY} ${HDF5_C_LIBRARIES} ZLIB::ZLIB PkgConfig::LIBCONFIG MPI::MPI_C OpenMP::OpenMP_C m)

# CUDA backend (cuBLAS, NCCL): optional.
set(SCFM_HAVE_CUDA OFF)
if(NOT SCFM_CUDA STREQUAL "OFF")
  include(CheckLanguage)
  # sm_80 (A100) and sm_90 (H100, H200) unless the caller names others;
  # set before the language is checked so CMake does not pick the default.
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES 80 90)
  endif()
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    find_package(CUDAToolkit)
    find_library(SCFM_NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR})
    find_path(SCFM_NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS})
    if(CUDAToolkit_FOUND AND SCFM_NCCL_LIBRARY AND SCFM_NCCL_INCLUDE_DIR AND TARGET CUDA::cublasLt)
      set(SCFM_HAVE_CUDA ON)
      enable_language(CUDA)
    endif()
  endif()
  if(SCFM_CUDA STREQUAL "ON" AND NOT SCFM_HAVE_CUDA)
    message(FATAL_ERROR "SCFM_CUDA=ON but the CUDA toolkit with cuBLAS and NCCL was not found")
  endif()
endif()
message(STATUS "scfm: OpenBLAS ${SCFM_OPENBLAS_LIBRARY}; CUDA toolkit with cuBLAS and NCCL: ${SCFM_HAVE_CUDA}")
