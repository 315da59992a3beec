# cmake -DPLUGIN=<path to mqchat.so> -P check_exports.cmake
# Fails unless `nm -D --defined-only` lists exactly the three entry points.
execute_process(COMMAND nm -D --defined-only ${PLUGIN}
                OUTPUT_VARIABLE out RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "nm -D ${PLUGIN} failed (${rc})")
endif()
string(REGEX MATCHALL "[^\n]+" lines "${out}")
set(names "")
foreach(l IN LISTS lines)
  string(REGEX REPLACE "^[0-9a-fA-F]* *[A-Za-z] " "" name "${l}")
  list(APPEND names "${name}")
endforeach()
list(SORT names)
set(want mosquitto_plugin_cleanup mosquitto_plugin_init mosquitto_plugin_version)
if(NOT names STREQUAL want)
  message(FATAL_ERROR "mqchat.so exports [${names}], want exactly [${want}]")
endif()
message(STATUS "mqchat.so exports exactly: ${names}")
