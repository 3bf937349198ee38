# The libtorch of record (DESIGN section 9): 2.11.0 unpacked from PyPI's torch wheel by
# scripts/fetch-libtorch.sh into .cache/libtorch-2.11.0 (torch/lib, torch/include).
#
# A CPU build links libtorch_cpu and libc10 only. The wheel's TorchConfig.cmake is not used for
# it: that config belongs to a CUDA build and wants the CUDA toolkit, cuDNN and NCCL at configure
# time and links libtorch_cuda (about 30 further CUDA libraries at run time) into every binary.
# Defines the target moe_torch and MOE_TORCH_VERSION.
set(MOE_LIBTORCH_DIR "${PROJECT_SOURCE_DIR}/.cache/libtorch-2.11.0" CACHE PATH
    "Folder with torch/lib and torch/include: an unpacked torch wheel (scripts/fetch-libtorch.sh)")

set(_torch ${MOE_LIBTORCH_DIR}/torch)
if(NOT EXISTS ${_torch}/lib/libtorch_cpu.so OR NOT EXISTS ${_torch}/include/torch/csrc/api/include/torch/torch.h)
  message(FATAL_ERROR "No libtorch in MOE_LIBTORCH_DIR=${MOE_LIBTORCH_DIR} (torch/lib/libtorch_cpu.so and "
                      "torch/include expected): run scripts/fetch-libtorch.sh, or point -DMOE_LIBTORCH_DIR "
                      "at a torch wheel's site-packages folder")
endif()

# The version as the headers state it (torch/headeronly/version.h in 2.11), so the record names what was compiled.
set(_ver_h ${_torch}/include/torch/headeronly/version.h)
if(NOT EXISTS ${_ver_h})
  set(_ver_h ${_torch}/include/torch/csrc/api/include/torch/version.h)
endif()
file(STRINGS ${_ver_h} _ver REGEX "#define TORCH_VERSION_(MAJOR|MINOR|PATCH) ")
string(REGEX REPLACE ".*MAJOR ([0-9]+).*MINOR ([0-9]+).*PATCH ([0-9]+).*" "\\1.\\2.\\3" MOE_TORCH_VERSION "${_ver}")
if(MOE_TORCH_VERSION VERSION_LESS 2.1)
  message(FATAL_ERROR "libtorch ${MOE_TORCH_VERSION} in ${MOE_LIBTORCH_DIR}: moe-train needs 2.x (2.11.0 is of record)")
endif()
message(STATUS "libtorch ${MOE_TORCH_VERSION} from ${MOE_LIBTORCH_DIR}")

# The wheel's include folder carries its own copy of fmt (v12) next to torch's headers; searched
# first, it would shadow Debian's fmt 9, whose library we link (undefined fmt::v12 symbols). The
# headers are seen through a folder of links to every entry but fmt.
set(_inc ${PROJECT_BINARY_DIR}/libtorch-include)
file(REMOVE_RECURSE ${_inc})
file(MAKE_DIRECTORY ${_inc})
file(GLOB _entries RELATIVE ${_torch}/include ${_torch}/include/*)
foreach(_e ${_entries})
  if(NOT _e STREQUAL "fmt")
    file(CREATE_LINK ${_torch}/include/${_e} ${_inc}/${_e} SYMBOLIC)
  endif()
endforeach()

add_library(moe_torch INTERFACE)
target_include_directories(moe_torch SYSTEM INTERFACE ${_inc} ${_torch}/include/torch/csrc/api/include)
target_link_libraries(moe_torch INTERFACE ${_torch}/lib/libtorch_cpu.so ${_torch}/lib/libc10.so)
# The wheel is built with the CXX11 ABI; every translation unit that sees its headers must agree.
set(MOE_TORCH_CXX_FLAGS -D_GLIBCXX_USE_CXX11_ABI=1)

# The CUDA build (MOE_WITH_CUDA): c10_cuda (streams, the caching allocator), the CUDA runtime
# and NCCL at link time; libtorch_cuda.so itself is loaded at run time only where a GPU is
# (lib/parallel/device.h says why). Headers and the runtime come from a CUDA 13 toolkit (these
# machines: /usr/local/cuda). NCCL comes first from the wheel's copy beside libtorch
# (nvidia/nccl, unpacked by scripts/fetch-libtorch.sh --nccl: the NCCL torch 2.11 pins, found by
# libtorch_cuda.so too), then from the toolkit's folders: some toolkits carry nccl.h but no libnccl.
if(MOE_WITH_CUDA)
  find_package(CUDAToolkit 13 REQUIRED)
  if(NOT EXISTS ${_torch}/lib/libc10_cuda.so)
    message(FATAL_ERROR "MOE_WITH_CUDA: ${_torch}/lib has no libc10_cuda.so: not a CUDA build of libtorch")
  endif()
  if(NOT TARGET CUDA::cudart)
    message(FATAL_ERROR "MOE_WITH_CUDA: the CUDA toolkit in ${CUDAToolkit_BIN_DIR}/.. has no libcudart")
  endif()
  set(_wheel_nccl ${MOE_LIBTORCH_DIR}/nvidia/nccl)
  if(EXISTS ${_wheel_nccl}/include/nccl.h AND EXISTS ${_wheel_nccl}/lib/libnccl.so.2)
    set(_nccl_include ${_wheel_nccl}/include)
    set(_nccl_library ${_wheel_nccl}/lib/libnccl.so.2)
  else()
    find_path(MOE_NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS})
    find_library(MOE_NCCL_LIBRARY NAMES nccl libnccl.so.2 HINTS ${CUDAToolkit_LIBRARY_DIR}
                 ${CUDAToolkit_LIBRARY_ROOT}/lib ${CUDAToolkit_LIBRARY_ROOT}/lib64)
    if(NOT MOE_NCCL_INCLUDE_DIR OR NOT MOE_NCCL_LIBRARY)
      message(FATAL_ERROR "MOE_WITH_CUDA: NCCL not found (nccl.h: ${MOE_NCCL_INCLUDE_DIR}, libnccl: ${MOE_NCCL_LIBRARY}); "
                          "run scripts/fetch-libtorch.sh --nccl, install NCCL 2.28, or point CMAKE_PREFIX_PATH at it")
    endif()
    set(_nccl_include ${MOE_NCCL_INCLUDE_DIR})
    set(_nccl_library ${MOE_NCCL_LIBRARY})
  endif()
  message(STATUS "CUDA ${CUDAToolkit_VERSION} from ${CUDAToolkit_BIN_DIR}/..; NCCL ${_nccl_library}")
  add_library(moe_torch_cuda INTERFACE)
  # NCCL's folder first: a toolkit's include folder may hold another nccl.h.
  target_include_directories(moe_torch_cuda SYSTEM INTERFACE ${_nccl_include} ${CUDAToolkit_INCLUDE_DIRS})
  target_link_libraries(moe_torch_cuda INTERFACE moe_torch ${_torch}/lib/libc10_cuda.so CUDA::cudart ${_nccl_library}
                        ${CMAKE_DL_LIBS})
  target_compile_definitions(moe_torch_cuda INTERFACE MOE_WITH_CUDA=1)
endif()
