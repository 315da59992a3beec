# mqchat_protoc_c(<out var> <file.proto>...): generate C sources with protoc-c into the
# current binary dir at build time and return the .pb-c.c list in <out var>.
function(mqchat_protoc_c out_var)
  set(outs)
  foreach(p ${ARGN})
    get_filename_component(name ${p} NAME_WE)
    get_filename_component(dir ${p} DIRECTORY)
    set(c ${CMAKE_CURRENT_BINARY_DIR}/${name}.pb-c.c)
    set(h ${CMAKE_CURRENT_BINARY_DIR}/${name}.pb-c.h)
    add_custom_command(
      OUTPUT ${c} ${h}
      COMMAND ${PROTOC_C} --c_out=${CMAKE_CURRENT_BINARY_DIR} -I${dir} ${p}
      DEPENDS ${p}
      COMMENT "protoc-c ${name}.proto")
    list(APPEND outs ${c})
  endforeach()
  set(${out_var} ${outs} PARENT_SCOPE)
endfunction()
