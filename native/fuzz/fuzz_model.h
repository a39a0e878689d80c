// The model the model-level fuzz targets run against: loaded once per process from
// PG_FUZZ_MODEL / PG_FUZZ_MMPROJ (scripts/fuzz.sh converts the tiny fixture with its mask decoder).
#pragma once

#include "pg_model.h"

#include <cstdio>
#include <cstdlib>

inline pg_model * pg_fuzz_model() {
    static pg_model_ptr model = [] {
        const char * text   = getenv("PG_FUZZ_MODEL");
        const char * vision = getenv("PG_FUZZ_MMPROJ");
        if (!text || !vision) {
            fprintf(stderr, "fuzz: set PG_FUZZ_MODEL and PG_FUZZ_MMPROJ (scripts/fuzz.sh does)\n");
            abort();
        }
        pg_model_params p;
        p.model_path  = text;
        p.mmproj_path = vision;
        p.gpu         = "cpu";
        p.threads     = 1;
        pg_model_ptr m;
        pg_error     err;
        if (!pg_model_load(p, nullptr, m, err)) {
            fprintf(stderr, "fuzz: cannot load the model: %s\n", err.message.c_str());
            abort();
        }
        return m;
    }();
    return model.get();
}
