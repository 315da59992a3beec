# Unit tests of the plugin's broker-independent core (topics.c, wire.c,
# config.c). Included from tests/unit/CMakeLists.txt: include(plugin_core.cmake)
add_executable(test_plugin_core ${CMAKE_CURRENT_LIST_DIR}/test_plugin_core.c)
target_link_libraries(test_plugin_core PRIVATE mqchat_plugin_core PkgConfig::CMOCKA)
add_test(NAME plugin_core COMMAND test_plugin_core)
