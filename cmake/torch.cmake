# LibTorch from the PyPI torch wheel (requirements/torch.txt) in the project's venv, which
# ./setup.sh makes and links at ./.venv. Defines the target paft::torch: everything that uses
# LibTorch links it, and nothing else names torch's libraries, include folders or link flags.
#
#   -DPAFT_PYTHON=/path/to/python   another Python whose torch package provides LibTorch
#   -DTorch_DIR=...                 a LibTorch found some other way (PAFT_PYTHON is then not read)
set(PAFT_PYTHON "${CMAKE_SOURCE_DIR}/.venv/bin/python" CACHE FILEPATH
    "Python whose torch package provides LibTorch (default: the venv ./setup.sh makes)")
# Asked again at every configure (unless Torch_DIR was given by hand), so that a changed
# PAFT_PYTHON or venv is followed: find_package caches Torch_DIR, which is then dropped.
if(NOT Torch_DIR OR PAFT_TORCH_PREFIX)
  if(NOT EXISTS "${PAFT_PYTHON}")
    message(FATAL_ERROR "No LibTorch: ${PAFT_PYTHON} does not exist. Run ./setup.sh deps (it makes "
                        "the venv with the pinned torch wheel), or set PAFT_PYTHON or Torch_DIR.")
  endif()
  execute_process(
    COMMAND "${PAFT_PYTHON}" -c "import torch, torch.utils; print(torch.utils.cmake_prefix_path)"
    OUTPUT_VARIABLE _paft_torch_prefix OUTPUT_STRIP_TRAILING_WHITESPACE
    ERROR_VARIABLE _paft_torch_error RESULT_VARIABLE _paft_torch_result)
  if(NOT _paft_torch_result EQUAL 0)
    message(FATAL_ERROR "${PAFT_PYTHON} cannot import torch: ${_paft_torch_error}")
  endif()
  if(PAFT_TORCH_PREFIX AND NOT PAFT_TORCH_PREFIX STREQUAL _paft_torch_prefix)
    unset(Torch_DIR CACHE)
    unset(Caffe2_DIR CACHE)
  endif()
  set(PAFT_TORCH_PREFIX "${_paft_torch_prefix}" CACHE INTERNAL "torch.utils.cmake_prefix_path")
  list(APPEND CMAKE_PREFIX_PATH "${_paft_torch_prefix}")
endif()

# A CUDA wheel's CMake config needs a CUDA toolkit with nvcc, and without TORCH_CUDA_ARCH_LIST it
# try-runs a program to detect the local GPU, which fails where there is none. paft compiles no
# CUDA code of its own, so the list only has to be valid (the wheel's kernels cover sm_75 to
# sm_120 whatever it says).
if(NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST})
  set(ENV{TORCH_CUDA_ARCH_LIST} "8.0;8.6;9.0")
endif()
if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
  set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  set(CUDAToolkit_ROOT /usr/local/cuda)
endif()
find_package(Torch REQUIRED)

if(PAFT_WITH_CUDA AND NOT TORCH_CUDA_LIBRARIES)
  message(FATAL_ERROR "PAFT_WITH_CUDA=ON but the LibTorch found at ${Torch_DIR} is a CPU-only "
                      "build; use the CUDA wheel of requirements/torch.txt or -DPAFT_WITH_CUDA=OFF.")
endif()

add_library(paft_torch INTERFACE)
add_library(paft::torch ALIAS paft_torch)
target_link_libraries(paft_torch INTERFACE ${TORCH_LIBRARIES})
target_include_directories(paft_torch SYSTEM INTERFACE ${TORCH_INCLUDE_DIRS})
# The wheel's CUDA libraries (cuBLAS, cuDNN, NCCL, ...) sit in the nvidia/* packages beside torch;
# libtorch_cuda finds them at run time through its own RPATH. The linker does not expand that
# $ORIGIN, and would otherwise resolve them to the local toolkit's (older) copies.
get_filename_component(_paft_site_packages "${TORCH_INSTALL_PREFIX}/.." ABSOLUTE)
file(GLOB _paft_nvidia_lib_dirs LIST_DIRECTORIES true "${_paft_site_packages}/nvidia/*/lib")
if(_paft_nvidia_lib_dirs)
  string(REPLACE ";" ":" _paft_rpath_link "${_paft_nvidia_lib_dirs}")
  target_link_options(paft_torch INTERFACE "LINKER:-rpath-link,${_paft_rpath_link}")
endif()
# ProcessGroupNCCL.hpp includes <nccl.h>: the one of the wheel's NCCL (nvidia-nccl), ahead of the
# local toolkit's, whose version differs.
if(EXISTS "${_paft_site_packages}/nvidia/nccl/include/nccl.h")
  target_include_directories(paft_torch SYSTEM BEFORE INTERFACE "${_paft_site_packages}/nvidia/nccl/include")
endif()
message(STATUS "paft: LibTorch ${Torch_VERSION} from ${TORCH_INSTALL_PREFIX} "
               "(CUDA: ${PAFT_WITH_CUDA}, architectures $ENV{TORCH_CUDA_ARCH_LIST})")
