# Build options shared by every target.
if(NOT CMAKE_BUILD_TYPE AND NOT CMAKE_CONFIGURATION_TYPES)
  set(CMAKE_BUILD_TYPE Release CACHE STRING "Build type" FORCE)
endif()

set(CMAKE_CXX_STANDARD 20)
set(CMAKE_CXX_STANDARD_REQUIRED ON)
set(CMAKE_CXX_EXTENSIONS OFF)
set(CMAKE_EXPORT_COMPILE_COMMANDS ON)
set(CMAKE_POSITION_INDEPENDENT_CODE ON)

option(SKIFF_BUILD_TESTS "Build the tests" ON)
option(SKIFF_BUILD_BENCH "Build the benchmarks" ON)
option(SKIFF_SANITIZE "Build with AddressSanitizer and UndefinedBehaviorSanitizer" OFF)
option(SKIFF_WERROR "Treat warnings as errors" ON)
# libFuzzer targets (tests/fuzz), clang only; tests/fuzz/run_fuzz.sh configures a separate
# build with this ON and builds just the fuzz targets and their dependencies.
option(SKIFF_FUZZ "Build the libFuzzer targets (requires clang)" OFF)

find_program(CCACHE_PROGRAM ccache)
if(CCACHE_PROGRAM)
  set(CMAKE_CXX_COMPILER_LAUNCHER "${CCACHE_PROGRAM}")
  set(CMAKE_C_COMPILER_LAUNCHER "${CCACHE_PROGRAM}")
endif()

if(SKIFF_SANITIZE)
  # -fno-sanitize=vptr: cpprestsdk's header templates instantiated in our code check vptrs of
  # objects created inside the uninstrumented Debian library, whose type_info is not shared,
  # and UBSan reports them as the wrong type (a false positive that aborts the operator).
  add_compile_options(-fsanitize=address,undefined -fno-sanitize=vptr -fno-omit-frame-pointer
    -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined -fno-sanitize=vptr)
endif()

if(SKIFF_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "SKIFF_FUZZ=ON needs clang (e.g. -DCMAKE_CXX_COMPILER=clang++)")
  endif()
  # Coverage instrumentation everywhere; only the fuzz executables link libFuzzer's main.
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer
    -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()

# Warnings for our own code only (generated protobuf code is compiled without them).
add_library(skiff_warnings INTERFACE)
target_compile_options(skiff_warnings INTERFACE -Wall -Wextra -Wpedantic
  -Wnon-virtual-dtor -Wcast-align -Wunused -Wnull-dereference -Wformat=2)
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  target_compile_options(skiff_warnings INTERFACE -Wshadow=local)
else()
  # clang has no -Wshadow=local; its -Wshadow covers locals shadowing locals (and globals).
  target_compile_options(skiff_warnings INTERFACE -Wshadow)
endif()
if(SKIFF_WERROR)
  target_compile_options(skiff_warnings INTERFACE -Werror)
endif()
if(SKIFF_SANITIZE)
  # GCC 12 reports false -Wrestrict / -Wmaybe-uninitialized positives in libstdc++ string
  # code when instrumented (GCC bug 105329); the release build keeps them.
  target_compile_options(skiff_warnings INTERFACE -Wno-restrict -Wno-maybe-uninitialized)
endif()
