#include "pg_system.h"
#include "pg_backend.h"

#include "llama.h"

#include "ggml-backend.h"

#include <fstream>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#if defined(__APPLE__)
#include <sys/sysctl.h>
#endif
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#ifndef PG_LLAMA_COMMIT
#define PG_LLAMA_COMMIT "unknown"
#endif

namespace {

const char * device_type_name(enum ggml_backend_dev_type t) {
    switch (t) {
        case GGML_BACKEND_DEVICE_TYPE_CPU: return "cpu";
        case GGML_BACKEND_DEVICE_TYPE_GPU: return "gpu";
        case GGML_BACKEND_DEVICE_TYPE_IGPU: return "igpu";
        case GGML_BACKEND_DEVICE_TYPE_ACCEL: return "accel";
        default: break;
    }
    return "unknown";
}

}  // namespace

int pg_physical_cores() {
    int logical = (int) std::thread::hardware_concurrency();
    if (logical <= 0) logical = 1;
#if defined(__linux__)
    // Each physical core lists its hardware threads once; count distinct sibling sets.
    std::set<std::string> cores;
    for (int cpu = 0; cpu < logical; ++cpu) {
        std::ifstream f("/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/thread_siblings");
        std::string   line;
        if (f && std::getline(f, line) && !line.empty()) cores.insert(line);
    }
    if (!cores.empty()) return (int) cores.size();
#elif defined(__APPLE__)
    int    n   = 0;
    size_t len = sizeof(n);
    if (sysctlbyname("hw.perflevel0.physicalcpu", &n, &len, nullptr, 0) == 0 && n > 0) return n;
    if (sysctlbyname("hw.physicalcpu", &n, &len, nullptr, 0) == 0 && n > 0) return n;
#endif
    return logical;
}

pg_system_info pg_get_system_info() {
    pg_backend_init_once();
    pg_system_info info;
    info.llama_cpp_commit = PG_LLAMA_COMMIT;
    info.cpu_variant      = pg_cpu_backend_variant();
    info.logical_cpus     = (int) std::thread::hardware_concurrency();
    info.default_threads  = pg_physical_cores();

    std::lock_guard<std::mutex> lock(pg_backend_registry_mutex());
    for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
        ggml_backend_dev_t dev = ggml_backend_dev_get(i);
        pg_device_info     d;
        d.name                 = ggml_backend_dev_name(dev);
        d.description          = ggml_backend_dev_description(dev);
        d.type                 = device_type_name(ggml_backend_dev_type(dev));
        ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(dev);
        d.backend              = reg ? ggml_backend_reg_name(reg) : "";
        size_t free_b = 0, total_b = 0;
        ggml_backend_dev_memory(dev, &free_b, &total_b);
        d.memory_free  = free_b;
        d.memory_total = total_b;
        info.devices.push_back(std::move(d));
    }

    ggml_backend_reg_t cpu = ggml_backend_reg_by_name("CPU");
    if (cpu) {
        auto get_features = (ggml_backend_get_features_t) ggml_backend_reg_get_proc_address(cpu, "ggml_backend_get_features");
        if (get_features) {
            for (ggml_backend_feature * f = get_features(cpu); f && f->name; ++f) {
                info.cpu_features.push_back({ f->name, f->value ? f->value : "" });
            }
        }
    }
    return info;
}

int64_t pg_native_heap_bytes() {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
    const struct mallinfo2 mi = mallinfo2();
    return (int64_t) (mi.uordblks + mi.hblkhd);
#else
    return -1;
#endif
}
