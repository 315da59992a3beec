# Unit tests of the chat rules and the device layer (plugin/src/rules, plugin/src/device).
