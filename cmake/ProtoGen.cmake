# skiff_generate_proto(OUT_SRCS OUT_HDRS PROTO_ROOT protos... [GRPC])
# Runs protoc (and grpc_cpp_plugin when GRPC is given) at build time.
function(skiff_generate_proto out_srcs out_hdrs proto_root)
  cmake_parse_arguments(ARG "GRPC" "" "PROTOS" ${ARGN})
  set(srcs)
  set(hdrs)
  set(gen_dir "${CMAKE_CURRENT_BINARY_DIR}/gen")
  file(MAKE_DIRECTORY "${gen_dir}")
  foreach(proto IN LISTS ARG_PROTOS)
    file(RELATIVE_PATH rel "${proto_root}" "${proto}")
    string(REGEX REPLACE "\\.proto$" "" base "${rel}")
    set(outs "${gen_dir}/${base}.pb.cc" "${gen_dir}/${base}.pb.h")
    set(args --cpp_out=${gen_dir})
    if(ARG_GRPC)
      list(APPEND outs "${gen_dir}/${base}.grpc.pb.cc" "${gen_dir}/${base}.grpc.pb.h")
      list(APPEND args --grpc_out=${gen_dir} --plugin=protoc-gen-grpc=${SKIFF_GRPC_CPP_PLUGIN})
    endif()
    add_custom_command(
      OUTPUT ${outs}
      COMMAND ${SKIFF_PROTOC} -I ${proto_root} ${args} ${proto}
      DEPENDS ${proto}
      COMMENT "protoc ${rel}"
      VERBATIM)
    foreach(o IN LISTS outs)
      if(o MATCHES "\\.cc$")
        list(APPEND srcs "${o}")
      else()
        list(APPEND hdrs "${o}")
      endif()
    endforeach()
  endforeach()
  set(${out_srcs} ${srcs} PARENT_SCOPE)
  set(${out_hdrs} ${hdrs} PARENT_SCOPE)
endfunction()
