# Unit tests of the plugin's layers below the broker callbacks: the wake
# facility (worker/), and the chat rules and device layer (rules/, device/)
# linked with small broker stubs instead of a broker (broker_stubs.c).
# Included from tests/unit/CMakeLists.txt.
add_executable(test_wake ${CMAKE_CURRENT_LIST_DIR}/test_wake.c)
target_link_libraries(test_wake PRIVATE mqchat_wake PkgConfig::CMOCKA)
add_test(NAME wake COMMAND test_wake)
set_tests_properties(wake PROPERTIES TIMEOUT 60)

# mqchat.so exports the three plugin entry points and nothing else
# (plugin/mqchat.map): mosquitto loads plugins with RTLD_GLOBAL.
add_test(NAME plugin_exports
         COMMAND ${CMAKE_COMMAND} -DPLUGIN=$<TARGET_FILE:mqchat_plugin>
                 -P ${CMAKE_CURRENT_LIST_DIR}/check_exports.cmake)

# The chat rules and the device layer with broker stubs (no broker), on a
# real store in a temp dir per test.
add_executable(test_chat ${CMAKE_CURRENT_LIST_DIR}/test_chat.c
                         ${CMAKE_CURRENT_LIST_DIR}/broker_stubs.c)
target_link_libraries(test_chat PRIVATE mqchat_chat PkgConfig::CMOCKA)
add_test(NAME chat COMMAND test_chat)
set_tests_properties(chat PROPERTIES TIMEOUT 120)
