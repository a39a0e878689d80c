// Process-wide ggml/llama.cpp initialisation.
#pragma once

// Initialises llama.cpp's backends and our log routing, once per process.
void pg_backend_init_once();
