// What this build of the core can run on: ggml backends and devices, CPU features, threads.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

struct pg_device_info {
    std::string name;         // ggml device name, e.g. "CPU", "CUDA0"
    std::string description;  // human readable, e.g. the GPU model
    std::string type;         // "cpu", "gpu", "igpu", "accel"
    std::string backend;      // the ggml backend registry it belongs to, e.g. "CPU", "CUDA"
    uint64_t    memory_free  = 0;
    uint64_t    memory_total = 0;
};

struct pg_feature {
    std::string name;
    std::string value;
};

struct pg_system_info {
    std::string                 llama_cpp_commit;
    std::string                 cpu_variant;  // pg_cpu_backend_variant()
    std::vector<pg_device_info> devices;
    std::vector<pg_feature>     cpu_features;  // as ggml's CPU backend reports them (only the ones present)
    int                         default_threads = 1;
    int                         logical_cpus    = 1;
};

// Registers ggml backends (once) and describes them.
pg_system_info pg_get_system_info();

// Physical cores on this machine (falls back to logical CPUs where the OS does not say).
int pg_physical_cores();

// Bytes the C library's allocator holds for the process (in use, heap and mmap), for leak checks;
// -1 where the C library does not say (only glibc does).
int64_t pg_native_heap_bytes();
