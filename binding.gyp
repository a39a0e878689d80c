# prebuildify and node-gyp enter here. The real build is CMake (cmake-js) over the pinned llama.cpp:
# this target only runs it and leaves paligemma.node in build/Release, where node-gyp tools look.
# The CMake build folder lives in native-build/ (outside build/), so `node-gyp rebuild`, which
# deletes build/, does not throw away a compiled llama.cpp.
{
  "targets": [
    {
      "target_name": "paligemma",
      "type": "none",
      "actions": [
        {
          "action_name": "cmake_build",
          "inputs": [],
          "outputs": ["<(PRODUCT_DIR)/paligemma.node"],
          "action": ["node", "<(module_root_dir)/scripts/build-native.mjs", "--out", "<(PRODUCT_DIR)"]
        }
      ]
    }
  ]
}
