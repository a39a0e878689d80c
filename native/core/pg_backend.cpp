#include "pg_backend.h"
#include "pg_log.h"

#include "llama.h"

#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#ifdef GGML_BACKEND_DL
#include <filesystem>
#if defined(_WIN32)
#define WIN32_LEAN_AND_MEAN
#include <windows.h>
#else
#include <dlfcn.h>
#endif
#endif

namespace {

std::string cpu_variant;
std::string backend_dir;
std::string forced_variant;  // PALIGEMMA_CPU_VARIANT, when set
std::string forced_problem;  // why it could not be honoured

#ifdef GGML_BACKEND_DL
namespace fs = std::filesystem;

#if defined(_WIN32)
const char * kPrefix = "ggml-";
const char * kSuffix = ".dll";
#elif defined(__APPLE__)
const char * kPrefix = "libggml-";
const char * kSuffix = ".so";  // ggml names its loadable backends .so on macOS too
#else
const char * kPrefix = "libggml-";
const char * kSuffix = ".so";
#endif

// The folder of the binary that holds this code (the addon, or the paligemma-native tool): the
// backend libraries ship beside it, wherever the package was installed or unpacked.
fs::path own_folder() {
#if defined(_WIN32)
    HMODULE module = nullptr;
    GetModuleHandleExW(GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS | GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT, (LPCWSTR) &own_folder, &module);
    wchar_t     buf[32768];
    const DWORD n = GetModuleFileNameW(module, buf, 32768);
    return n ? fs::path(std::wstring(buf, n)).parent_path() : fs::path();
#else
    Dl_info info{};
    if (!dladdr((void *) &own_folder, &info) || !info.dli_fname) return fs::path();
    std::error_code ec;
    const fs::path  file = fs::canonical(fs::u8path(info.dli_fname), ec);
    return ec ? fs::u8path(info.dli_fname).parent_path() : file.parent_path();
#endif
}

// What a CPU variant library says about itself: 0 when it cannot run on this CPU.
int variant_score(const fs::path & file) {
    typedef int (*score_fn)();
#if defined(_WIN32)
    HMODULE h = LoadLibraryW(file.wstring().c_str());
    if (!h) return 0;
    auto      fn    = (score_fn) GetProcAddress(h, "ggml_backend_score");
    const int score = fn ? fn() : 0;
    FreeLibrary(h);
#else
    void * h = dlopen(file.string().c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!h) return 0;
    auto      fn    = (score_fn) dlsym(h, "ggml_backend_score");
    const int score = fn ? fn() : 0;
    dlclose(h);
#endif
    return score;
}

// ggml's own loader would do the same scoring, but it does not say which variant it took.
// PALIGEMMA_CPU_VARIANT=<name> takes that one instead (if it runs here): what a CPU of another
// kind would run, e.g. haswell (AVX2) on an AVX-512 machine, for comparisons and bug reports.
void load_backends() {
    const fs::path dir               = own_folder();
    backend_dir                      = dir.u8string();
    const char * forced              = getenv("PALIGEMMA_CPU_VARIANT");
    forced_variant                   = forced ? forced : "";
    const std::string     cpu_prefix = std::string(kPrefix) + "cpu-";
    fs::path              best;
    int                   best_score = 0;
    std::error_code       ec;
    std::vector<fs::path> others;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
        const std::string name = it->path().filename().u8string();
        if (name.size() <= strlen(kSuffix) || name.compare(name.size() - strlen(kSuffix), std::string::npos, kSuffix) != 0) continue;
        if (name.rfind(cpu_prefix, 0) == 0) {
            if (!forced_variant.empty() && name != cpu_prefix + forced_variant + kSuffix) continue;
            const int score = variant_score(it->path());
            if (score > best_score) {
                best_score = score;
                best       = it->path();
            }
        } else if (name.rfind(kPrefix, 0) == 0 && name != std::string(kPrefix) + "base" + kSuffix) {
            others.push_back(it->path());  // a GPU backend (libggml-cuda.so, ...)
        }
    }
    for (const fs::path & p : others) ggml_backend_load(p.u8string().c_str());
    if (best_score > 0 && ggml_backend_load(best.u8string().c_str())) {
        std::string name = best.filename().u8string();
        cpu_variant      = name.substr(cpu_prefix.size(), name.size() - cpu_prefix.size() - strlen(kSuffix));
    } else if (!forced_variant.empty()) {
        forced_problem = "PALIGEMMA_CPU_VARIANT is '" + forced_variant + "', but " + cpu_prefix + forced_variant + kSuffix + " in " + backend_dir +
                         " is missing or does not run on this CPU";
    }
}
#endif

template <typename Fn>
Fn cpu_proc(ggml_backend_t backend, const char * name) {
    ggml_backend_dev_t dev = backend ? ggml_backend_get_device(backend) : nullptr;
    if (!dev || ggml_backend_dev_type(dev) != GGML_BACKEND_DEVICE_TYPE_CPU) return nullptr;
    ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(dev);
    return reg ? (Fn) ggml_backend_reg_get_proc_address(reg, name) : nullptr;
}

}  // namespace

void pg_backend_init_once() {
    static std::once_flag once;
    std::call_once(once, [] {
        pg_log_init();
#ifdef GGML_BACKEND_DL
        load_backends();
#else
        cpu_variant = "built in";
#endif
        llama_backend_init();
    });
}

const std::string & pg_cpu_backend_variant() {
    pg_backend_init_once();
    return cpu_variant;
}

const std::string & pg_backend_dir() {
    pg_backend_init_once();
    return backend_dir;
}

const std::string & pg_forced_variant_problem() {
    pg_backend_init_once();
    return forced_problem;
}

bool pg_cpu_variant_has(const char * feature) {
    pg_backend_init_once();
    if (forced_variant.empty()) return true;
    ggml_backend_reg_t cpu = ggml_backend_reg_by_name("CPU");
    auto get_features      = cpu ? (ggml_backend_get_features_t) ggml_backend_reg_get_proc_address(cpu, "ggml_backend_get_features") : nullptr;
    if (!get_features) return false;
    for (ggml_backend_feature * f = get_features(cpu); f && f->name; ++f) {
        if (!strcmp(f->name, feature)) return f->value && !strcmp(f->value, "1");
    }
    return false;
}

bool pg_cpu_has_avx2_fma_f16c() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c") &&
                            pg_cpu_variant_has("AVX2") && pg_cpu_variant_has("FMA") && pg_cpu_variant_has("F16C");
    return has;
#else
    return false;
#endif
}

std::string pg_no_cpu_backend_message() {
    pg_backend_init_once();
#ifdef GGML_BACKEND_DL
    if (!forced_problem.empty()) return "no CPU backend: " + forced_problem;
    return "no CPU backend: none of the " + std::string(kPrefix) + "cpu-*" + kSuffix + " libraries in " + backend_dir +
           " loads on this CPU (the package's prebuilt folder is incomplete; reinstall paligemma-node)";
#else
    return "no CPU backend in this build of paligemma-node";
#endif
}

void pg_backend_set_threads(ggml_backend_t backend, int n_threads) {
    if (auto fn = cpu_proc<ggml_backend_set_n_threads_t>(backend, "ggml_backend_set_n_threads")) fn(backend, n_threads);
}

void pg_backend_set_abort_callback(ggml_backend_t backend, ggml_abort_callback cb, void * data) {
    if (auto fn = cpu_proc<ggml_backend_set_abort_callback_t>(backend, "ggml_backend_set_abort_callback")) fn(backend, cb, data);
}

ggml_backend_buffer_type_t pg_cpu_repack_buffer_type() {
    ggml_backend_dev_t cpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    if (!cpu) return nullptr;
    auto get =
        (ggml_backend_dev_get_extra_bufts_t) ggml_backend_reg_get_proc_address(ggml_backend_dev_backend_reg(cpu), "ggml_backend_dev_get_extra_bufts");
    if (!get) return nullptr;
    for (ggml_backend_buffer_type_t * b = get(cpu); b && *b; ++b) {
        if (strstr(ggml_backend_buft_name(*b), "REPACK")) return *b;
    }
    return nullptr;
}

std::mutex & pg_backend_registry_mutex() {
    static std::mutex m;
    return m;
}
