/* stb_image_impl.c — stb_image compiled from Debian's header into the PNG
 * and zip targets, so that ASan, UBSan and libFuzzer's coverage see inside
 * the decoder too (the shared libstb is not instrumented).  The
 * executable's own definitions win over the shared library's, so
 * omniglot.c's calls land here: the same version of the code, instrumented. */
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#include <stb_image.h>
