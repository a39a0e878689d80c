#include "napi_exports.h"
#include "napi_worker.h"
#include "pg_system.h"

namespace {

class SystemInfoWorker : public PgPromiseWorker {
  public:
    explicit SystemInfoWorker(Napi::Env env) : PgPromiseWorker(env, "paligemma:systemInfo") {}

  protected:
    bool Run() override {
        info_ = pg_get_system_info();
        return true;
    }

    Napi::Value Result(Napi::Env env) override {
        Napi::Object out = Napi::Object::New(env);
        out.Set("llamaCppCommit", info_.llama_cpp_commit);
        Napi::Array devices = Napi::Array::New(env, info_.devices.size());
        for (size_t i = 0; i < info_.devices.size(); ++i) {
            const pg_device_info & d = info_.devices[i];
            Napi::Object           o = Napi::Object::New(env);
            o.Set("name", d.name);
            o.Set("description", d.description);
            o.Set("type", d.type);
            o.Set("backend", d.backend);
            o.Set("memoryFree", Napi::Number::New(env, (double) d.memory_free));
            o.Set("memoryTotal", Napi::Number::New(env, (double) d.memory_total));
            devices.Set(i, o);
        }
        out.Set("backends", devices);
        Napi::Object features = Napi::Object::New(env);
        for (const auto & f : info_.cpu_features) features.Set(f.name, f.value);
        out.Set("cpuFeatures", features);
        out.Set("cpuVariant", info_.cpu_variant);
        out.Set("defaultThreads", info_.default_threads);
        out.Set("logicalCpus", info_.logical_cpus);
        return out;
    }

  private:
    pg_system_info info_;
};

Napi::Value SystemInfo(const Napi::CallbackInfo & info) {
    return (new SystemInfoWorker(info.Env()))->Start();
}

// nativeHeapBytes(): synchronous, microseconds (a leak check's probe).
Napi::Value NativeHeapBytes(const Napi::CallbackInfo & info) {
    return Napi::Number::New(info.Env(), (double) pg_native_heap_bytes());
}

}  // namespace

void pg_register_system(Napi::Env env, Napi::Object exports) {
    exports.Set("systemInfo", Napi::Function::New(env, SystemInfo, "systemInfo"));
    exports.Set("nativeHeapBytes", Napi::Function::New(env, NativeHeapBytes, "nativeHeapBytes"));
}
