// big_vision's VQ-VAE mask decoder (PaliGemma segmentation): 16 codebook ids on a 4x4 grid ->
// a 64x64 map in about [-1, 1]. Small enough for plain loops; weights come from the mmproj file.
#pragma once
#include "pg_error.h"
#include "pg_vision.h"

#include <vector>

struct pg_conv {
    int                out = 0, in = 0, k = 0;
    bool               transposed = false;  // ConvTranspose2d: weight [in, out, k, k]; else [out, in, k, k]
    std::vector<float> w, b;
};

struct pg_mask_decoder {
    int                codebook = 0, dim = 0;
    std::vector<float> embeddings;  // codebook x dim
    pg_conv            first;       // 1x1, dim -> 128, then ReLU
    pg_conv            res[2][3];   // two residual blocks: 3x3, ReLU, 3x3, ReLU, 1x1, plus the input
    pg_conv            up[4];       // transposed 4x4 stride 2 pad 1: 128, 64, 32, 16 channels, each then ReLU
    pg_conv            last;        // 1x1, 16 -> 1
};

// Copies the decoder weights out of a loaded mmproj (fails when it has none).
bool pg_mask_decoder_init(const pg_vision_model & vision, pg_mask_decoder & out, pg_error & err);

// codes: 16 ids (row-major 4x4), each < codebook. out: 64 * 64 floats, row-major.
bool pg_mask_decode(const pg_mask_decoder & d, const int codes[16], std::vector<float> & out, pg_error & err);
