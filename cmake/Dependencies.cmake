# Every dependency is a Debian package; scripts/bootstrap.sh installs them.
find_package(Threads REQUIRED)
find_package(Protobuf REQUIRED)
find_package(gRPC CONFIG REQUIRED)
find_package(nlohmann_json 3.10 REQUIRED)
find_package(spdlog REQUIRED)
find_package(yaml-cpp REQUIRED)
find_package(OpenSSL REQUIRED)
find_package(Boost 1.74 REQUIRED)
find_package(cpprestsdk CONFIG REQUIRED)
find_package(PkgConfig REQUIRED)
pkg_check_modules(RE2 REQUIRED IMPORTED_TARGET re2)
pkg_check_modules(NGHTTP2 REQUIRED IMPORTED_TARGET libnghttp2)
if(SKIFF_BUILD_TESTS)
  find_package(Catch2 2 REQUIRED)
  include(Catch)
endif()

find_program(SKIFF_PROTOC protoc REQUIRED)
find_program(SKIFF_GRPC_CPP_PLUGIN grpc_cpp_plugin REQUIRED)

# yaml-cpp 0.7 on Debian exports the plain "yaml-cpp" target.
if(NOT TARGET yaml-cpp::yaml-cpp)
  add_library(yaml-cpp::yaml-cpp INTERFACE IMPORTED)
  set_target_properties(yaml-cpp::yaml-cpp PROPERTIES INTERFACE_LINK_LIBRARIES yaml-cpp)
endif()

# tcmalloc (Debian's gperftools) for the operator-side binaries: translation allocates
# many small objects and glibc malloc spends most of its time consolidating. Not with
# sanitizers, which bring their own allocator. Not for skiff-proxy: its request path
# allocates almost nothing (exchanges and buffers are recycled per connection), and
# tcmalloc's caches cost it 4 MB of its idle RSS.
add_library(skiff_malloc INTERFACE)
if(NOT SKIFF_SANITIZE)
  pkg_check_modules(TCMALLOC REQUIRED IMPORTED_TARGET libtcmalloc_minimal)
  target_link_libraries(skiff_malloc INTERFACE PkgConfig::TCMALLOC)
endif()
