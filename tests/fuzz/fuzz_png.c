/* fuzz_png.c — one Omniglot PNG: the header and chunk checks, then
 * stb_image (data_omniglot_decode_png).  The input is the PNG. */
#include "experiments/data/omniglot.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static float out[28 * 28];
    if (data_omniglot_decode_png("fuzz.png", data, size, 28, out) == AD_OK)
        for (int i = 0; i < 28 * 28; i++)
            fuzz_require(out[i] >= 0 && out[i] <= 1, "a pixel outside [0, 1]");
    return 0;
}
