/* omniglot.c — Omniglot read in place from its zips; see omniglot.h.
 *
 * Three passes over the zips, all before any pixel is decoded:
 *   1. scan: every entry name is parsed as <top>/<Alphabet>/<character>/
 *      IIII_DD.png (directory entries, __MACOSX/ and hidden files skipped;
 *      anything else is an error naming the entry);
 *   2. group: entries sorted by folder, then drawer; each folder must hold
 *      drawers 01..20 exactly once, all with one id IIII; characters are then
 *      sorted by id, and no two may share one;
 *   3. decode: each PNG is read whole (libzip checks its CRC when we read to
 *      the end), decoded with stb_image to 8-bit gray and shrunk.
 * So a malformed layout is reported before a second is spent decoding.
 *
 * stb_image: Debian's libstb (pkg-config stb, `stb_dep`) is a shared library
 * with the implementation already compiled in, so this file only includes
 * the header; defining STB_IMAGE_IMPLEMENTATION here as well would put a
 * second copy of every stbi_ symbol in the program.
 *
 * Shrinking 105 x 105 to size x size is exact area averaging (a box filter
 * with fractional coverage).  In units of 1/size of a source pixel, source
 * pixel i spans [i*size, (i+1)*size) and output pixel j spans
 * [j*105, (j+1)*105), so their overlap w[j][i] is an integer, and an output
 * pixel is
 *     out[j][k] = Σ_r Σ_c w[j][r] w[k][c] ink[r][c] / (105 * 105 * 255)
 * with ink = 255 - gray (stroke 255).  The sums are exact integers and one
 * division rounds; for a 1-bit PNG every value is m / 105² (size 28:
 * m / 11025 with m = 0..11025), so an independent program can reproduce each
 * float exactly.  stb_image_resize (also in libstb) was not used: its box
 * filter is a trapezoid that equals area averaging only at integer ratios,
 * and 105/28 = 3.75 is not one.
 *
 * Cost of data_omniglot_load (32,460 PNGs, size 28, one core of the
 * development machine): 0.7 s (debugoptimized), 1.7 s under ASan + UBSan;
 * 102 MB of pixels.  About a third is stb_image, a fifth zlib, a fifth
 * om_shrink, the rest libzip and the kernel.  Each zip is read whole into
 * memory first: libzip reading from the file seeks and reads once per entry
 * (130,000 system calls).  It still converts each entry's DOS time with
 * mktime, which stats /etc/localtime twice per entry when TZ is unset
 * (~0.1 s); that is libzip's, and harmless.  No cache is needed.
 *
 * Size letters: S output side, W = 105 source side, D = 20 drawers. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <stb_image.h>
#include <zip.h>
#include <zlib.h>

#include "experiments/data/omniglot.h"

enum {
    OM_W = DATA_OMNIGLOT_SIDE,
    OM_D = DATA_OMNIGLOT_DRAWERS,
    /* An Omniglot PNG is about 300 bytes; even an uncompressed 105x105 RGBA
     * one is under 64 KiB.  A bigger entry is not one of ours. */
    OM_MAX_ENTRY = 1 << 20,
    OM_MAX_ZIPS = 2,
};
/* The largest zip read (the two standard ones are 9 and 6 MB). */
#define OM_MAX_ZIP ((size_t)1 << 30)

static const unsigned char om_png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

/* ---- pass 1: entry names ------------------------------------------------ */

/* One image entry: which zip, which index, its folder and its numbers. */
typedef struct om_entry {
    int zip;
    zip_uint64_t index;
    const char *name;  /* the entry name (libzip's, valid while the zip is open) */
    size_t folder_len; /* name[0..folder_len) is "<top>/<Alphabet>/<character>" */
    int id, drawer;    /* IIII and DD */
} om_entry;

/* The open zips and everything the passes collect. */
typedef struct om_load {
    int n_zips;
    const char *paths[OM_MAX_ZIPS];
    zip_t *za[OM_MAX_ZIPS];
    unsigned char *zbuf[OM_MAX_ZIPS]; /* each zip's bytes, read whole (owned) */
    const void *mem;  /* or the caller's bytes of the one zip (not owned) */
    size_t mem_len;
    om_entry *entries;
    size_t n_entries;
    unsigned char *buf; /* one entry's bytes */
    size_t buf_cap;
} om_load;

static bool om_digits(const char *s, int n, int *value)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = 10 * v + (s[i] - '0');
    }
    *value = v;
    return true;
}

/* Entries that are not images but are expected in a zip made on some
 * systems: directories, macOS resource forks and hidden files. */
static bool om_skip_name(const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || name[len - 1] == '/')
        return true;
    if (strncmp(name, "__MACOSX/", 9) == 0)
        return true;
    const char *base = strrchr(name, '/');
    base = base ? base + 1 : name;
    return base[0] == '.';
}

/* Parses "<top>/<Alphabet>/<character>/IIII_DD.png" into e; false if the
 * name has another shape. */
static bool om_parse_name(const char *name, om_entry *e)
{
    const char *slash[3];
    const char *p = name;
    for (int k = 0; k < 3; k++) {
        slash[k] = strchr(p, '/');
        if (!slash[k] || slash[k] == p)
            return false; /* too few parts, or an empty one */
        p = slash[k] + 1;
    }
    /* p is the file name: exactly "IIII_DD.png". */
    if (strlen(p) != 11 || p[4] != '_' || strcmp(p + 7, ".png") != 0)
        return false;
    if (!om_digits(p, 4, &e->id) || !om_digits(p + 5, 2, &e->drawer))
        return false;
    e->name = name;
    e->folder_len = (size_t)(slash[2] - name);
    return true;
}

/* libzip's words for an error code from zip_open_from_source. */
static int om_fail_open(const char *path, int zerr)
{
    zip_error_t ze;
    zip_error_init_with_code(&ze, zerr);
    char reason[256];
    snprintf(reason, sizeof reason, "%s", zip_error_strerror(&ze));
    zip_error_fini(&ze);
    switch (zerr) {
    case ZIP_ER_MEMORY:
        return ad_fail(AD_ENOMEM, "%s: out of memory opening the zip", path);
    case ZIP_ER_NOZIP:
        return ad_fail(AD_EFORMAT, "%s: not a zip archive (no zip directory found)",
                       path);
    default:
        return ad_fail(AD_EFORMAT, "%s: corrupt zip archive: %s", path, reason);
    }
}

/* Reads the file at path whole into *out (caller frees). */
static int om_slurp(const char *path, unsigned char **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    errno = 0;
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return ad_fail(AD_EIO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 20, got = 0;
    unsigned char *buf = malloc(cap);
    int rc = buf ? AD_OK : ad_fail(AD_ENOMEM, "%s: out of memory", path);
    while (rc == AD_OK) {
        if (got == cap) {
            unsigned char *nb = cap < OM_MAX_ZIP ? realloc(buf, 2 * cap) : NULL;
            if (!nb) {
                rc = cap < OM_MAX_ZIP
                   ? ad_fail(AD_ENOMEM, "%s: out of memory after %zu bytes", path, got)
                   : ad_fail(AD_EFORMAT, "%s: larger than %zu bytes: not an Omniglot "
                             "zip", path, (size_t)OM_MAX_ZIP);
                break;
            }
            buf = nb;
            cap *= 2;
        }
        errno = 0;
        size_t r = fread(buf + got, 1, cap - got, fp);
        got += r;
        if (r == 0 || got < cap) {
            if (ferror(fp))
                rc = ad_fail(AD_EIO, "%s: read error: %s", path,
                             strerror(errno ? errno : EIO));
            else if (feof(fp))
                break;
        }
    }
    fclose(fp);
    if (rc != AD_OK) {
        free(buf);
        return rc;
    }
    *out = buf;
    *len = got;
    return AD_OK;
}

/* Opens zip z of ld from a copy in memory (one read instead of a seek and
 * read per entry). */
static int om_open_zip(om_load *ld, int z)
{
    const char *path = ld->paths[z];
    size_t len = ld->mem_len;
    const void *bytes = ld->mem;
    if (!bytes) {
        int rc = om_slurp(path, &ld->zbuf[z], &len);
        if (rc != AD_OK)
            return rc;
        bytes = ld->zbuf[z];
    }
    zip_error_t ze;
    zip_error_init(&ze);
    zip_source_t *src = zip_source_buffer_create(bytes, len, 0, &ze);
    if (src) {
        ld->za[z] = zip_open_from_source(src, ZIP_RDONLY | ZIP_CHECKCONS, &ze);
        if (!ld->za[z])
            zip_source_free(src);
    }
    int zerr = zip_error_code_zip(&ze);
    zip_error_fini(&ze);
    if (!ld->za[z])
        return om_fail_open(path, zerr);
    return AD_OK;
}

/* Opens zip z of ld and appends its image entries to ld->entries. */
static int om_scan_zip(om_load *ld, int z)
{
    const char *path = ld->paths[z];
    int rc = om_open_zip(ld, z);
    if (rc != AD_OK)
        return rc;
    zip_int64_t n = zip_get_num_entries(ld->za[z], 0);
    if (n < 0)
        return ad_fail(AD_EFORMAT, "%s: cannot count the entries: %s", path,
                       zip_strerror(ld->za[z]));
    om_entry *grown = realloc(ld->entries,
                              sizeof *grown * (ld->n_entries + (size_t)n + 1));
    if (!grown)
        return ad_fail(AD_ENOMEM, "%s: out of memory for %lld entries", path,
                       (long long)n);
    ld->entries = grown;
    for (zip_int64_t i = 0; i < n; i++) {
        const char *name = zip_get_name(ld->za[z], (zip_uint64_t)i, 0);
        if (!name)
            return ad_fail(AD_EFORMAT, "%s: entry %lld has no name: %s", path,
                           (long long)i, zip_strerror(ld->za[z]));
        if (om_skip_name(name))
            continue;
        om_entry *e = &ld->entries[ld->n_entries];
        if (!om_parse_name(name, e))
            return ad_fail(AD_EFORMAT, "%s: %s: unexpected entry (Omniglot entries "
                           "are <top>/<Alphabet>/<character>/IIII_DD.png)", path, name);
        e->zip = z;
        e->index = (zip_uint64_t)i;
        ld->n_entries++;
    }
    return AD_OK;
}

/* ---- pass 2: characters ------------------------------------------------- */

/* A character: its folder and the entry of each drawer (drawer d at d-1). */
typedef struct om_char {
    const om_entry *first; /* names the folder and the zip */
    int id;
    const om_entry *drawer[OM_D];
} om_char;

static int om_cmp_folder(const om_entry *a, const om_entry *b)
{
    if (a->zip != b->zip)
        return a->zip < b->zip ? -1 : 1;
    size_t n = a->folder_len < b->folder_len ? a->folder_len : b->folder_len;
    int c = memcmp(a->name, b->name, n);
    if (c != 0)
        return c;
    return a->folder_len < b->folder_len ? -1 : a->folder_len > b->folder_len;
}

static int om_cmp_entry(const void *pa, const void *pb)
{
    const om_entry *a = pa, *b = pb;
    int c = om_cmp_folder(a, b);
    if (c != 0)
        return c;
    return (a->drawer > b->drawer) - (a->drawer < b->drawer);
}

static int om_cmp_char(const void *pa, const void *pb)
{
    const om_char *a = pa, *b = pb;
    if (a->id != b->id)
        return a->id < b->id ? -1 : 1;
    return om_cmp_folder(a->first, b->first);
}

/* Checks one folder's entries e[0..n) (sorted by drawer) and fills ch. */
static int om_make_char(const om_load *ld, const om_entry *e, size_t n, om_char *ch)
{
    const char *path = ld->paths[e->zip];
    int fl = (int)e->folder_len;
    ch->first = e;
    ch->id = e->id;
    for (size_t j = 0; j < n; j++) {
        if (e[j].id != e->id)
            return ad_fail(AD_EFORMAT, "%s: %s: character id %04d, but other files "
                           "of %.*s have id %04d", path, e[j].name, e[j].id, fl,
                           e->name, e->id);
        if (e[j].drawer < 1 || e[j].drawer > OM_D)
            return ad_fail(AD_EFORMAT, "%s: %s: drawer %02d is outside 01..%02d",
                           path, e[j].name, e[j].drawer, OM_D);
        if (j > 0 && e[j].drawer == e[j - 1].drawer)
            return ad_fail(AD_EFORMAT, "%s: %s: drawer %02d of %.*s appears twice",
                           path, e[j].name, e[j].drawer, fl, e->name);
    }
    if (n != OM_D) {
        /* Sorted and distinct: the first gap is the first missing drawer. */
        int missing = (int)n + 1;
        for (size_t j = 0; j < n; j++)
            if (e[j].drawer != (int)j + 1) {
                missing = (int)j + 1;
                break;
            }
        return ad_fail(AD_EFORMAT, "%s: %.*s has %zu drawers, expected %d (drawer "
                       "%02d is missing)", path, fl, e->name, n, OM_D, missing);
    }
    for (int d = 0; d < OM_D; d++)
        ch->drawer[d] = &e[d];
    return AD_OK;
}

/* Groups the sorted entries into characters (*out, caller frees), sorted by
 * id, ids distinct. */
static int om_group(om_load *ld, om_char **out, int *n_out)
{
    *out = NULL;
    *n_out = 0;
    if (ld->n_entries == 0) {
        if (ld->n_zips == 1)
            return ad_fail(AD_EFORMAT, "%s: no Omniglot images in the zip", ld->paths[0]);
        return ad_fail(AD_EFORMAT, "%s, %s: no Omniglot images in the zips",
                       ld->paths[0], ld->paths[1]);
    }
    qsort(ld->entries, ld->n_entries, sizeof *ld->entries, om_cmp_entry);
    om_char *chars = malloc(sizeof *chars * (ld->n_entries / OM_D + 1));
    if (!chars)
        return ad_fail(AD_ENOMEM, "%s: out of memory for the characters", ld->paths[0]);
    int n = 0;
    for (size_t i = 0; i < ld->n_entries;) {
        size_t j = i + 1;
        while (j < ld->n_entries && om_cmp_folder(&ld->entries[i], &ld->entries[j]) == 0)
            j++;
        /* Only folders of exactly OM_D entries pass, so n stays in bounds. */
        int rc = om_make_char(ld, &ld->entries[i], j - i, &chars[n]);
        if (rc != AD_OK) {
            free(chars);
            return rc;
        }
        n++;
        i = j;
    }
    qsort(chars, (size_t)n, sizeof *chars, om_cmp_char);
    for (int c = 1; c < n; c++)
        if (chars[c].id == chars[c - 1].id) {
            const om_entry *a = chars[c - 1].first, *b = chars[c].first;
            int rc = ad_fail(AD_EFORMAT, "%s: %.*s and %s: %.*s have the same "
                             "character id %04d (the same character loaded twice?)",
                             ld->paths[a->zip], (int)a->folder_len, a->name,
                             ld->paths[b->zip], (int)b->folder_len, b->name, a->id);
            free(chars);
            return rc;
        }
    *out = chars;
    *n_out = n;
    return AD_OK;
}

/* ---- pass 3: pixels ----------------------------------------------------- */

/* The box-filter weights of one axis.  Source pixel i spans S units, an
 * output pixel W >= S, so i overlaps at most two outputs: `lo[i]` with
 * weight wlo[i] and lo[i] + 1 with weight whi[i] (often 0). */
typedef struct om_filter {
    int size;
    int lo[OM_W], wlo[OM_W], whi[OM_W];
    unsigned char white[OM_W]; /* a blank source row */
} om_filter;

static void om_filter_make(om_filter *f, int size)
{
    f->size = size;
    for (int i = 0; i < OM_W; i++) {
        int a = i * size, b = (i + 1) * size; /* in units of 1/size */
        int j = a / OM_W, edge = (j + 1) * OM_W;
        f->lo[i] = j;
        f->wlo[i] = (b <= edge ? b : edge) - a;
        f->whi[i] = b <= edge ? 0 : b - edge;
    }
    memset(f->white, 255, sizeof f->white);
}

/* out (size, size) from gray (W, W), 0 = black stroke, 255 = white.
 * Each source row is first reduced across (h), then added into the one or
 * two output rows it overlaps.  Only ink costs: a stroke covers about 8% of
 * an Omniglot image, so blank rows are skipped with one memcmp and blank
 * pixels with one test.  (The test suite checks this against a direct
 * double-precision area average over each output pixel's square.) */
static void om_shrink(const om_filter *f, const unsigned char *gray, float *out)
{
    int size = f->size;
    int32_t acc[OM_W + 1][OM_W + 1]; /* (size + 1, size + 1): ≤ W * W * 255 */
    int32_t h[OM_W + 1];             /* one row reduced across: ≤ W * 255 */
    for (int j = 0; j <= size; j++)
        memset(acc[j], 0, sizeof acc[j][0] * (size_t)(size + 1));
    for (int r = 0; r < OM_W; r++) {
        const unsigned char *row = gray + r * OM_W;
        if (memcmp(row, f->white, OM_W) == 0)
            continue;
        memset(h, 0, sizeof h[0] * (size_t)(size + 1));
        for (int c = 0; c < OM_W; c++) {
            if (row[c] == 255)
                continue;
            int32_t ink = 255 - row[c];
            h[f->lo[c]] += f->wlo[c] * ink;
            h[f->lo[c] + 1] += f->whi[c] * ink;
        }
        int32_t *lo = acc[f->lo[r]], *hi = acc[f->lo[r] + 1];
        for (int k = 0; k < size; k++) {
            lo[k] += f->wlo[r] * h[k];
            hi[k] += f->whi[r] * h[k];
        }
    }
    const double denom = (double)OM_W * OM_W * 255.0;
    for (int j = 0; j < size; j++)
        for (int k = 0; k < size; k++)
            out[j * size + k] = (float)(acc[j][k] / denom);
}

/* Reads entry e whole into ld->buf; *len says how many bytes. */
static int om_read_entry(om_load *ld, const om_entry *e, size_t *len)
{
    const char *path = ld->paths[e->zip];
    zip_t *za = ld->za[e->zip];
    *len = 0;
    zip_stat_t st;
    zip_stat_init(&st);
    if (zip_stat_index(za, e->index, 0, &st) != 0 || !(st.valid & ZIP_STAT_SIZE))
        return ad_fail(AD_EFORMAT, "%s: %s: cannot read its size: %s", path, e->name,
                       zip_strerror(za));
    if (st.size > OM_MAX_ENTRY)
        return ad_fail(AD_EFORMAT, "%s: %s: %llu bytes, too big for a 105x105 PNG",
                       path, e->name, (unsigned long long)st.size);
    size_t want = (size_t)st.size;
    if (want + 1 > ld->buf_cap) {
        unsigned char *nb = realloc(ld->buf, want + 1);
        if (!nb)
            return ad_fail(AD_ENOMEM, "%s: %s: out of memory", path, e->name);
        ld->buf = nb;
        ld->buf_cap = want + 1;
    }
    zip_file_t *zf = zip_fopen_index(za, e->index, 0);
    if (!zf)
        return ad_fail(AD_EFORMAT, "%s: %s: cannot open the entry: %s", path, e->name,
                       zip_strerror(za));
    /* Read one byte past the stated size: libzip checks the CRC when the
     * data end, and a longer entry shows up here. */
    size_t got = 0;
    int rc = AD_OK;
    while (got < want + 1) {
        zip_int64_t r = zip_fread(zf, ld->buf + got, want + 1 - got);
        if (r < 0) {
            rc = ad_fail(AD_EFORMAT, "%s: %s: corrupt entry: %s", path, e->name,
                         zip_file_strerror(zf));
            break;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    if (rc == AD_OK && got != want)
        rc = ad_fail(AD_EFORMAT, "%s: %s: the zip says %zu bytes, found %s%zu", path,
                     e->name, want, got > want ? "more than " : "", got > want ? want : got);
    zip_fclose(zf);
    *len = got;
    return rc;
}

/* ---- one PNG -------------------------------------------------------------
 * stb_image trusts a PNG's chunk lengths and inflates as much as the stream
 * holds: a 169-byte file whose IDAT claims 2 GiB makes it allocate 2 GiB
 * before finding the bytes are not there, a small IDAT can inflate to a
 * thousand times its size, and a zero-length IDAT makes it add 0 to a NULL
 * pointer (undefined behaviour).  So om_png_check walks the chunks first:
 * every length within the bytes present, IHDR first and saying 105x105
 * grayscale of 1 to 8 bits (Omniglot's are 1-bit; what other tools write is
 * 8-bit), no empty IDAT, no critical chunk besides IHDR, PLTE, IDAT and IEND
 * (stb_image reads IDAT differently after Apple's CgBI), an IEND, and the
 * image data inflating (zlib, into a small scratch buffer) to exactly the
 * bytes such an image holds.  Only
 * then does stb_image decode, and what it allocates is bounded by twice the
 * PNG's size plus a few image-sized buffers (at most 105 x 106 bytes each). */

static uint32_t om_be32(const unsigned char *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

/* The PNG's type from IHDR (13 bytes at h): 105x105 grayscale, 1..8 bits,
 * not interlaced; *raw gets the bytes its image data must inflate to. */
static int om_png_ihdr(const unsigned char *h, size_t *raw)
{
    uint32_t w = om_be32(h), ht = om_be32(h + 4);
    int depth = h[8], type = h[9];
    if (w != OM_W || ht != OM_W)
        return ad_fail(AD_EFORMAT, "the image is %lux%lu, expected %dx%d", (unsigned long)w,
                       (unsigned long)ht, OM_W, OM_W);
    if (type != 0 || (depth != 1 && depth != 2 && depth != 4 && depth != 8))
        return ad_fail(AD_EFORMAT, "the PNG has colour type %d and bit depth %d, expected "
                       "grayscale (type 0) of 1, 2, 4 or 8 bits", type, depth);
    if (h[10] != 0 || h[11] != 0)
        return ad_fail(AD_EFORMAT, "the PNG names compression method %d and filter method "
                       "%d; only 0 and 0 exist", h[10], h[11]);
    if (h[12] != 0)
        return ad_fail(AD_EFORMAT, "the PNG is interlaced; expected a plain one");
    /* Each row: a filter byte, then the pixels packed depth bits each. */
    *raw = (size_t)OM_W * (1 + ((size_t)OM_W * (size_t)depth + 7) / 8);
    return AD_OK;
}

/* Inflates the next IDAT chunk's n bytes at p; z->total_out counts what
 * came out so far, which must stay within raw bytes. */
static int om_png_inflate(z_stream *z, const unsigned char *p, uint32_t n, size_t raw,
                          bool *ended)
{
    unsigned char scratch[4096];
    z->next_in = (unsigned char *)p; /* zlib's API is not const; it only reads */
    z->avail_in = n;
    while (z->avail_in > 0 && !*ended) {
        z->next_out = scratch;
        z->avail_out = sizeof scratch;
        int zr = inflate(z, Z_NO_FLUSH);
        if (zr == Z_STREAM_END)
            *ended = true;
        else if (zr != Z_OK)
            return ad_fail(AD_EFORMAT, "the PNG does not decode: its image data are not a "
                           "valid zlib stream (%s)", z->msg ? z->msg : zError(zr));
        if (z->total_out > raw)
            return ad_fail(AD_EFORMAT, "the PNG does not decode: its image data inflate to "
                           "more than the %zu bytes a %dx%d image of its type holds", raw,
                           OM_W, OM_W);
    }
    return AD_OK;
}

/* A chunk's type, printable: its letters, any other byte as '?'. */
typedef struct om_png_type { char s[5]; } om_png_type;

static om_png_type om_png_name(const unsigned char *type)
{
    om_png_type t;
    for (int i = 0; i < 4; i++)
        t.s[i] = (char)(type[i] >= 0x21 && type[i] <= 0x7e ? type[i] : '?');
    t.s[4] = '\0';
    return t;
}

/* True for a critical chunk (bit 5 of its first byte clear: an uppercase
 * letter) other than the four of the standard, PLTE included although a
 * grayscale PNG has no use for it.  A decoder must not skip such a chunk,
 * and stb_image knows one more: Apple's CgBI, after which it reads IDAT as
 * raw deflate without the zlib header, a different stream from the one
 * om_png_inflate checked. */
static bool om_png_critical_unknown(const unsigned char *type)
{
    static const char known[4][5] = {"IHDR", "PLTE", "IDAT", "IEND"};
    if (type[0] & 0x20)
        return false;
    for (int i = 0; i < 4; i++)
        if (memcmp(type, known[i], 4) == 0)
            return false;
    return true;
}

/* Walks the chunks of the PNG b[0..len): see the top of this part. */
static int om_png_check(const unsigned char *b, size_t len)
{
    if (len < sizeof om_png_sig || memcmp(b, om_png_sig, sizeof om_png_sig) != 0)
        return ad_fail(AD_EFORMAT, "not a PNG (no PNG signature at the start of its %zu "
                       "bytes)", len);
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit(&z) != Z_OK)
        return ad_fail(AD_ENOMEM, "out of memory for zlib");
    size_t at = sizeof om_png_sig, raw = 0;
    bool ihdr = false, idat = false, iend = false, ended = false;
    int rc = AD_OK;
    while (rc == AD_OK && !iend) {
        if (len - at < 12) {
            rc = ad_fail(AD_EFORMAT, "the PNG does not decode: it ends at byte %zu %s", len,
                         at == len ? "without an IEND chunk" : "inside a chunk's header");
            break;
        }
        uint32_t n = om_be32(b + at);
        const unsigned char *type = b + at + 4, *data = b + at + 8;
        if (n > len - at - 12) {
            rc = ad_fail(AD_EFORMAT, "the PNG does not decode: the chunk at byte %zu claims "
                         "%lu bytes, only %zu follow", at, (unsigned long)n, len - at - 12);
            break;
        }
        bool is_ihdr = memcmp(type, "IHDR", 4) == 0;
        if (ihdr == is_ihdr || (is_ihdr && n != 13))
            rc = ad_fail(AD_EFORMAT, "the PNG does not decode: %s", ihdr
                         ? "a second IHDR chunk" : "it does not start with a 13-byte IHDR chunk");
        else if (is_ihdr)
            rc = om_png_ihdr(data, &raw), ihdr = true;
        else if (memcmp(type, "IDAT", 4) == 0 && n == 0)
            rc = ad_fail(AD_EFORMAT, "the PNG does not decode: an empty IDAT chunk at byte "
                         "%zu", at);
        else if (memcmp(type, "IDAT", 4) == 0)
            rc = om_png_inflate(&z, data, n, raw, &ended), idat = true;
        else if (memcmp(type, "IEND", 4) == 0)
            iend = true;
        else if (om_png_critical_unknown(type))
            rc = ad_fail(AD_EFORMAT, "the PNG does not decode: a critical chunk \"%.4s\" at "
                         "byte %zu, not one of IHDR, PLTE, IDAT, IEND", om_png_name(type).s,
                         at);
        at += 12 + (size_t)n;
    }
    if (rc == AD_OK && (!idat || !ended || z.total_out != raw))
        rc = ad_fail(AD_EFORMAT, "the PNG does not decode: its image data %s %lu bytes, a "
                     "%dx%d image of its type holds %zu", ended ? "inflate to" : "stop after",
                     z.total_out, OM_W, OM_W, raw);
    inflateEnd(&z);
    return rc;
}

/* Checks, decodes and shrinks the PNG b[0..len) into out (size, size). */
static int om_png_decode(const unsigned char *b, size_t len, const om_filter *f, float *out)
{
    int rc = om_png_check(b, len);
    if (rc != AD_OK)
        return rc;
    int w, h, comp;
    unsigned char *gray = stbi_load_from_memory(b, (int)len, &w, &h, &comp, 1);
    if (!gray)
        return ad_fail(AD_EFORMAT, "the PNG does not decode (stb_image: %s)",
                       stbi_failure_reason() ? stbi_failure_reason() : "unknown reason");
    if (w != OM_W || h != OM_W) /* om_png_check saw 105x105: stb_image must agree */
        rc = ad_fail(AD_EFORMAT, "the image is %dx%d, expected %dx%d", w, h, OM_W, OM_W);
    else
        om_shrink(f, gray, out);
    stbi_image_free(gray);
    return rc;
}

/* Reads, decodes and shrinks the image of entry e into out (size, size). */
static int om_decode(om_load *ld, const om_entry *e, const om_filter *f, float *out)
{
    size_t len;
    int rc = om_read_entry(ld, e, &len); /* its messages name the zip and entry */
    if (rc == AD_OK && (rc = om_png_decode(ld->buf, len, f, out)) != AD_OK)
        rc = ad_fail_wrap(rc, "%s: %s", ld->paths[e->zip], e->name);
    return rc;
}

/* "folder" of entry e, newly allocated, or NULL. */
static char *om_folder_name(const om_entry *e)
{
    char *s = malloc(e->folder_len + 1);
    if (s) {
        memcpy(s, e->name, e->folder_len);
        s[e->folder_len] = '\0';
    }
    return s;
}

/* Fills out from the grouped characters. */
static int om_fill(om_load *ld, const om_char *chars, int n, int size, data_omniglot *out)
{
    size_t per_image = (size_t)size * (size_t)size;
    out->n_chars = n;
    out->n_drawers = OM_D;
    out->size = size;
    out->pixels = malloc(sizeof *out->pixels * (size_t)n * OM_D * per_image);
    out->ids = malloc(sizeof *out->ids * (size_t)n);
    out->names = calloc((size_t)n, sizeof *out->names);
    if (!out->pixels || !out->ids || !out->names)
        return ad_fail(AD_ENOMEM, "%s: out of memory for %d characters of %dx%d",
                       ld->paths[0], n, size, size);
    om_filter *f = malloc(sizeof *f); /* 45 KB: not on the stack */
    if (!f)
        return ad_fail(AD_ENOMEM, "%s: out of memory", ld->paths[0]);
    om_filter_make(f, size);
    int rc = AD_OK;
    for (int c = 0; rc == AD_OK && c < n; c++) {
        out->ids[c] = chars[c].id;
        out->names[c] = om_folder_name(chars[c].first);
        if (!out->names[c])
            rc = ad_fail(AD_ENOMEM, "%s: out of memory", ld->paths[0]);
        for (int d = 0; rc == AD_OK && d < OM_D; d++)
            rc = om_decode(ld, chars[c].drawer[d], f,
                           out->pixels + ((size_t)c * OM_D + (size_t)d) * per_image);
    }
    free(f);
    return rc;
}

/* The three passes over the zips paths[0..n_zips), or over the one zip
 * mem[0..mem_len) named paths[0] in messages. */
static int om_read_zips(int n_zips, const char *const *paths, const void *mem,
                        size_t mem_len, int size, data_omniglot *out)
{
    om_load ld;
    memset(&ld, 0, sizeof ld);
    ld.n_zips = n_zips;
    ld.mem = mem;
    ld.mem_len = mem_len;
    for (int z = 0; z < n_zips; z++)
        ld.paths[z] = paths[z];
    int rc = AD_OK;
    for (int z = 0; rc == AD_OK && z < n_zips; z++)
        rc = om_scan_zip(&ld, z);
    om_char *chars = NULL;
    int n = 0;
    if (rc == AD_OK)
        rc = om_group(&ld, &chars, &n);
    if (rc == AD_OK)
        rc = om_fill(&ld, chars, n, size, out);
    if (rc != AD_OK)
        data_omniglot_free(out);
    free(chars);
    free(ld.entries);
    free(ld.buf);
    for (int z = 0; z < n_zips; z++) {
        if (ld.za[z])
            zip_discard(ld.za[z]);
        free(ld.zbuf[z]);
    }
    return rc;
}

/* ---- public: loading ---------------------------------------------------- */

static int om_check_size(const char *who, int size)
{
    if (size < 1 || size > OM_W)
        return ad_fail(AD_EARG, "%s: size = %d is outside 1..%d (images are only "
                       "shrunk)", who, size, OM_W);
    return AD_OK;
}

/* What each loading call checks first: out given (then zeroed), no
 * argument NULL (else `null` names it), size in range. */
static int om_begin(const char *who, data_omniglot *out, const char *null, int size)
{
    if (!out)
        return ad_fail(AD_EARG, "%s: out is NULL", who);
    memset(out, 0, sizeof *out);
    if (null)
        return ad_fail(AD_EARG, "%s: %s is NULL", who, null);
    return om_check_size(who, size);
}

int data_omniglot_read_zip(const char *path, int size, data_omniglot *out)
{
    int rc = om_begin("data_omniglot_read_zip", out, path ? NULL : "path", size);
    return rc == AD_OK ? om_read_zips(1, &path, NULL, 0, size, out) : rc;
}

int data_omniglot_read_zip_mem(const char *name, const void *zip, size_t len, int size,
                               data_omniglot *out)
{
    int rc = om_begin("data_omniglot_read_zip_mem", out,
                      !name || (!zip && len > 0) ? "name or zip" : NULL, size);
    /* libzip wants a buffer even for no bytes (it then says "not a zip"). */
    return rc == AD_OK ? om_read_zips(1, &name, zip ? zip : "", len, size, out) : rc;
}

int data_omniglot_decode_png(const char *name, const void *png, size_t len, int size,
                             float *out)
{
    if (!name || (!png && len > 0) || !out)
        return ad_fail(AD_EARG, "data_omniglot_decode_png: name, png or out is NULL");
    int rc = om_check_size("data_omniglot_decode_png", size);
    if (rc != AD_OK)
        return rc;
    if (len > OM_MAX_ENTRY)
        return ad_fail(AD_EFORMAT, "%s: %zu bytes, too big for a 105x105 PNG", name, len);
    om_filter *f = malloc(sizeof *f); /* 45 KB: not on the stack */
    if (!f)
        return ad_fail(AD_ENOMEM, "%s: out of memory", name);
    om_filter_make(f, size);
    rc = om_png_decode(png ? png : (const void *)"", len, f, out);
    free(f);
    return rc == AD_OK ? AD_OK : ad_fail_wrap(rc, "%s", name);
}

int data_omniglot_load(const char *dir, int size, data_omniglot *out)
{
    int rc = om_begin("data_omniglot_load", out, dir ? NULL : "dir", size);
    if (rc != AD_OK)
        return rc;
    char *paths[2] = {data_join(dir, DATA_OMNIGLOT_BACKGROUND),
                      data_join(dir, DATA_OMNIGLOT_EVALUATION)};
    if (!paths[0] || !paths[1])
        rc = ad_fail(AD_ENOMEM, "data_omniglot_load: out of memory");
    else
        rc = om_read_zips(2, (const char *const *)paths, NULL, 0, size, out);
    /* Callers split characters by id (1..964 are the background set), so a
     * zip pair that is not the standard one must not pass for it. */
    for (int c = 0; rc == AD_OK && c < out->n_chars; c++)
        if (out->ids[c] != c + 1)
            rc = ad_fail(AD_EFORMAT, "%s: character ids are not 1..%d (id %d is missing); "
                         "these are not the standard Omniglot zips", dir, DATA_OMNIGLOT_CHARS,
                         c + 1);
    if (rc == AD_OK && out->n_chars != DATA_OMNIGLOT_CHARS)
        rc = ad_fail(AD_EFORMAT, "%s: %d characters, the standard Omniglot zips hold %d", dir,
                     out->n_chars, DATA_OMNIGLOT_CHARS);
    if (rc != AD_OK)
        data_omniglot_free(out);
    free(paths[0]);
    free(paths[1]);
    return rc;
}

void data_omniglot_free(data_omniglot *om)
{
    if (!om)
        return;
    for (int c = 0; om->names && c < om->n_chars; c++)
        free(om->names[c]);
    free(om->names);
    free(om->ids);
    free(om->pixels);
    memset(om, 0, sizeof *om);
}

/* ---- public: splits and tasks ------------------------------------------- */

static int om_cmp_int(const void *pa, const void *pb)
{
    int a = *(const int *)pa, b = *(const int *)pb;
    return (a > b) - (a < b);
}

int data_char_split_make(int n_chars, int n_train, int n_val, ad_rng *rng,
                         data_char_split *out)
{
    if (!out)
        return ad_fail(AD_EARG, "data_char_split_make: out is NULL");
    memset(out, 0, sizeof *out);
    if (!rng)
        return ad_fail(AD_EARG, "data_char_split_make: rng is NULL");
    if (n_chars < 1 || n_train < 0 || n_val < 0 || n_train > n_chars - n_val)
        return ad_fail(AD_EARG, "data_char_split_make: cannot take %d + %d characters "
                       "out of %d", n_train, n_val, n_chars);
    int *perm = malloc(sizeof *perm * (size_t)n_chars);
    if (!perm)
        return ad_fail(AD_ENOMEM, "data_char_split_make: out of memory");
    ad_rng_permutation(rng, perm, n_chars);
    out->n_train = n_train;
    out->n_val = n_val;
    out->n_test = n_chars - n_train - n_val;
    out->train = perm;
    out->val = perm + n_train;
    out->test = perm + n_train + n_val;
    qsort(out->train, (size_t)out->n_train, sizeof *perm, om_cmp_int);
    qsort(out->val, (size_t)out->n_val, sizeof *perm, om_cmp_int);
    qsort(out->test, (size_t)out->n_test, sizeof *perm, om_cmp_int);
    return AD_OK;
}

void data_char_split_free(data_char_split *s)
{
    if (!s)
        return;
    free(s->train);
    memset(s, 0, sizeof *s);
}

int data_task_init(data_task *t, int n_way, int k_train, int k_val, int size)
{
    if (!t)
        return ad_fail(AD_EARG, "data_task_init: t is NULL");
    memset(t, 0, sizeof *t);
    if (n_way < 1 || k_train < 1 || k_val < 0 || k_train + k_val > OM_D || size < 1
        || size > OM_W)
        return ad_fail(AD_EARG, "data_task_init: a %d-way task with %d + %d shots of "
                       "%dx%d (need n_way >= 1, k_train >= 1, k_val >= 0, k_train + "
                       "k_val <= %d, size 1..%d)", n_way, k_train, k_val, size, size,
                       OM_D, OM_W);
    size_t p = (size_t)size * (size_t)size;
    size_t nt = (size_t)n_way * (size_t)k_train, nv = (size_t)n_way * (size_t)k_val;
    t->n_way = n_way;
    t->k_train = k_train;
    t->k_val = k_val;
    t->size = size;
    t->x_train = malloc(sizeof *t->x_train * nt * p);
    t->y_train = malloc(sizeof *t->y_train * nt);
    t->x_val = malloc(sizeof *t->x_val * (nv ? nv * p : 1));
    t->y_val = malloc(sizeof *t->y_val * (nv ? nv : 1));
    t->chars = malloc(sizeof *t->chars * (size_t)n_way);
    t->drawers = malloc(sizeof *t->drawers * (nt + nv));
    if (!t->x_train || !t->y_train || !t->x_val || !t->y_val || !t->chars
        || !t->drawers) {
        data_task_free(t);
        return ad_fail(AD_ENOMEM, "data_task_init: out of memory for a %d-way task",
                       n_way);
    }
    return AD_OK;
}

void data_task_free(data_task *t)
{
    if (!t)
        return;
    free(t->x_train);
    free(t->y_train);
    free(t->x_val);
    free(t->y_val);
    free(t->chars);
    free(t->drawers);
    memset(t, 0, sizeof *t);
}

/* out[0..k) = k distinct values from 0..n-1 in random order (Floyd's
 * sampling, then a shuffle: every ordered k-subset is equally likely). */
static void om_sample_distinct(ad_rng *rng, int n, int k, int *out)
{
    for (int m = 0, j = n - k; j < n; j++, m++) {
        int t = (int)ad_rng_below(rng, (uint64_t)j + 1);
        bool seen = false;
        for (int i = 0; i < m; i++)
            seen = seen || out[i] == t;
        out[m] = seen ? j : t;
    }
    ad_rng_shuffle(rng, out, k);
}

static void om_copy_image(const data_omniglot *om, int c, int d, ad_real *dst)
{
    size_t p = (size_t)om->size * (size_t)om->size;
    const float *src = om->pixels + ((size_t)c * (size_t)om->n_drawers + (size_t)d) * p;
    for (size_t i = 0; i < p; i++)
        dst[i] = (ad_real)src[i];
}

int data_omniglot_sample_task(const data_omniglot *om, const int *pool, int n_pool,
                              ad_rng *rng, data_task *t)
{
    if (!om || !pool || !rng || !t || !t->x_train || !om->pixels)
        return ad_fail(AD_EARG, "data_omniglot_sample_task: NULL or empty argument");
    if (t->size != om->size || t->k_train + t->k_val > om->n_drawers)
        return ad_fail(AD_EARG, "data_omniglot_sample_task: the task wants %dx%d images "
                       "and %d drawers, the data have %dx%d and %d", t->size, t->size,
                       t->k_train + t->k_val, om->size, om->size, om->n_drawers);
    if (n_pool < t->n_way)
        return ad_fail(AD_EARG, "data_omniglot_sample_task: a %d-way task from %d "
                       "characters", t->n_way, n_pool);
    for (int i = 0; i < n_pool; i++) /* all of them: a bad pool fails at once */
        if (pool[i] < 0 || pool[i] >= om->n_chars)
            return ad_fail(AD_EARG, "data_omniglot_sample_task: pool[%d] = %d is not "
                           "a character 0..%d", i, pool[i], om->n_chars - 1);
    int k = t->k_train + t->k_val;
    om_sample_distinct(rng, n_pool, t->n_way, t->chars); /* positions in pool */
    size_t p = (size_t)om->size * (size_t)om->size;
    for (int c = 0; c < t->n_way; c++) {
        t->chars[c] = pool[t->chars[c]];
        int *dr = t->drawers + (size_t)c * (size_t)k;
        om_sample_distinct(rng, om->n_drawers, k, dr);
        for (int j = 0; j < t->k_train; j++) {
            size_t row = (size_t)c * (size_t)t->k_train + (size_t)j;
            om_copy_image(om, t->chars[c], dr[j], t->x_train + row * p);
            t->y_train[row] = c;
        }
        for (int j = 0; j < t->k_val; j++) {
            size_t row = (size_t)c * (size_t)t->k_val + (size_t)j;
            om_copy_image(om, t->chars[c], dr[t->k_train + j], t->x_val + row * p);
            t->y_val[row] = c;
        }
    }
    return AD_OK;
}
