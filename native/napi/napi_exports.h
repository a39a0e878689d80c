// One registration function per concern; each adds its functions to the module's exports.
#pragma once
#include <napi.h>

void pg_register_system(Napi::Env env, Napi::Object exports);
void pg_register_gguf(Napi::Env env, Napi::Object exports);
void pg_register_convert(Napi::Env env, Napi::Object exports);
void pg_register_model(Napi::Env env, Napi::Object exports);
void pg_register_image(Napi::Env env, Napi::Object exports);
