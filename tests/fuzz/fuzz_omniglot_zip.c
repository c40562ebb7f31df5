/* fuzz_omniglot_zip.c — an Omniglot zip read in place: libzip, the entry
 * names and their layout, each entry's bytes and CRC, then every PNG
 * (data_omniglot_read_zip_mem).  The input is the zip. */
#include <string.h>

#include "experiments/data/omniglot.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    data_omniglot om;
    if (data_omniglot_read_zip_mem("fuzz.zip", data, size, 28, &om) == AD_OK) {
        fuzz_require(om.n_chars >= 1 && om.n_drawers == DATA_OMNIGLOT_DRAWERS && om.size == 28,
                     "counts");
        for (int c = 0; c < om.n_chars; c++) {
            fuzz_require(om.ids[c] >= 0 && om.ids[c] <= 9999, "an id that is not 4 digits");
            fuzz_require(c == 0 || om.ids[c] > om.ids[c - 1], "ids not increasing");
            fuzz_require(om.names[c] && strlen(om.names[c]) > 0, "a character without a name");
        }
        size_t n = (size_t)om.n_chars * (size_t)om.n_drawers * 28 * 28;
        for (size_t i = 0; i < n; i++)
            fuzz_require(om.pixels[i] >= 0 && om.pixels[i] <= 1, "a pixel outside [0, 1]");
    }
    data_omniglot_free(&om);
    return 0;
}
