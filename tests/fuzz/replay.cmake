# Fuzz corpus replay, in every build (no libFuzzer needed): each fuzz
# target's LLVMFuzzerTestOneInput is linked with fuzz_replay.c into
# fuzz_replay_<target>, and ctest runs it over
#   - the seeds make-corpus.sh generates into the build dir (encoded
#     protobuf messages and signed tokens; nothing binary is committed), and
#   - the committed text seeds and crash reproducers in corpus/<target>/.
# Included from tests/CMakeLists.txt: include(fuzz/replay.cmake).
# The libFuzzer builds themselves are in fuzz/CMakeLists.txt (MQCHAT_FUZZ),
# which includes this file too if tests/CMakeLists.txt has not.
include_guard(GLOBAL)

set(MQCHAT_FUZZ_SRC ${CMAKE_CURRENT_LIST_DIR})
set(MQCHAT_FUZZ_GEN ${CMAKE_BINARY_DIR}/tests/fuzz-corpus)

add_custom_command(
  OUTPUT ${MQCHAT_FUZZ_GEN}/stamp
  COMMAND ${CMAKE_COMMAND} -E env PROTOC=${PROTOC_C}
          sh ${MQCHAT_FUZZ_SRC}/make-corpus.sh ${MQCHAT_FUZZ_GEN}
  COMMAND ${CMAKE_COMMAND} -E touch ${MQCHAT_FUZZ_GEN}/stamp
  DEPENDS ${MQCHAT_FUZZ_SRC}/make-corpus.sh ${CMAKE_SOURCE_DIR}/proto/mqchat.proto
  COMMENT "fuzz seed corpus (make-corpus.sh)")
add_custom_target(mqchat_fuzz_corpus ALL DEPENDS ${MQCHAT_FUZZ_GEN}/stamp)

foreach(t wire jwt)
  add_executable(fuzz_replay_${t} ${MQCHAT_FUZZ_SRC}/fuzz_${t}.c ${MQCHAT_FUZZ_SRC}/fuzz_replay.c)
  add_dependencies(fuzz_replay_${t} mqchat_fuzz_corpus)
  if(MQCHAT_FUZZ)
    # The libraries are then built with sanitizers (fuzz/CMakeLists.txt).
    target_link_options(fuzz_replay_${t} PRIVATE -fsanitize=address,undefined)
  endif()
  add_test(NAME fuzz_replay_${t}
           COMMAND fuzz_replay_${t} ${MQCHAT_FUZZ_GEN}/${t} ${MQCHAT_FUZZ_SRC}/corpus/${t})
endforeach()
target_link_libraries(fuzz_replay_wire PRIVATE mqchat_plugin_core)
target_link_libraries(fuzz_replay_jwt PRIVATE mqchat_jwt)
