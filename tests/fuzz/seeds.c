/* seeds.c — fuzz-seeds OUT [DATA_ROOT]: writes a small seed corpus for each
 * fuzz target into OUT/<target>/ (run.sh calls it; nothing here is kept in
 * the repository).
 *
 * The seeds are the real files cut down, when the shared data are there
 * (DATA_ROOT, else $HYPERTAPE_DATA): MNIST's IDX headers with their first
 * two images or labels (the count set to 2), raw and gzipped; CIFAR-10's
 * first two records, raw and gzipped (and as a batch file of two); the
 * first real Omniglot PNGs, and a zip holding the first character's 20
 * drawings, stored and deflated.
 * Without the data, the same shapes are built from scratch (and said so).
 * Always built here: the PNGs and zips the tests build (1-bit and 8-bit
 * gray), checkpoints written by the kit's own writer, .npy files written by
 * ad_save_npy.  Every seed is a few KB at most, so mutations stay fast. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <zip.h>
#include <zlib.h>

#include "ad/io.h"
#include "experiments/data/cifar.h"
#include "experiments/data/mnist.h"
#include "experiments/data/omniglot.h"
#include "experiments/kit/kit.h"

static const char *out_root;
static int n_written;

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz-seeds: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    exit(1);
}

/* OUT/target/name, its folder made. */
static const char *seed_path(const char *target, const char *name)
{
    static char path[4096];
    snprintf(path, sizeof path, "%s/%s", out_root, target);
    if (mkdir(out_root, 0777) != 0 && errno != EEXIST) die(out_root, strerror(errno));
    if (mkdir(path, 0777) != 0 && errno != EEXIST) die(path, strerror(errno));
    snprintf(path, sizeof path, "%s/%s/%s", out_root, target, name);
    return path;
}

static void put_raw(const char *target, const char *name, const void *b, size_t n)
{
    const char *path = seed_path(target, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(b, 1, n, f) != n || fclose(f) != 0) die(path, strerror(errno));
    n_written++;
}

static void put_gz(const char *target, const char *name, const void *b, size_t n)
{
    const char *path = seed_path(target, name);
    gzFile g = gzopen(path, "wb9");
    if (!g || (n > 0 && gzwrite(g, b, (unsigned)n) != (int)n) || gzclose(g) != Z_OK)
        die(path, "cannot write it through zlib");
    n_written++;
}

static void put_be32(unsigned char *b, uint32_t v)
{
    b[0] = (unsigned char)(v >> 24), b[1] = (unsigned char)(v >> 16);
    b[2] = (unsigned char)(v >> 8), b[3] = (unsigned char)v;
}

/* The first n bytes of a file, gunzipped if gzipped; how many there were. */
static size_t read_prefix(const char *path, unsigned char *b, size_t n)
{
    gzFile g = gzopen(path, "rb");
    if (!g) return 0;
    int got = gzread(g, b, (unsigned)n);
    gzclose(g);
    return got > 0 ? (size_t)got : 0;
}

/* ---- IDX and CIFAR ------------------------------------------------------- */

static void seeds_idx(const char *data)
{
    enum { PIX = 28 * 28 };
    unsigned char im[16 + 2 * PIX], lb[8 + 2];
    char path[4096];
    snprintf(path, sizeof path, "%s/mnist/%s", data ? data : "", DATA_MNIST_TRAIN_IMAGES);
    bool real = data && read_prefix(path, im, sizeof im) == sizeof im;
    snprintf(path, sizeof path, "%s/mnist/%s", data ? data : "", DATA_MNIST_TRAIN_LABELS);
    real = real && read_prefix(path, lb, sizeof lb) == sizeof lb;
    if (!real) { /* the same shapes from scratch */
        put_be32(im, 0x803), put_be32(im + 4, 2), put_be32(im + 8, 28), put_be32(im + 12, 28);
        for (int i = 0; i < 2 * PIX; i++) im[16 + i] = (unsigned char)(i * 7 % 256);
        put_be32(lb, 0x801), put_be32(lb + 4, 2), lb[8] = 5, lb[9] = 0;
        printf("fuzz-seeds: no MNIST under the data root: IDX seeds built from scratch\n");
    }
    put_be32(im + 4, 2); /* two images, two labels */
    put_be32(lb + 4, 2);
    put_raw("idx", "images2-idx3-ubyte", im, sizeof im);
    put_gz("idx", "images2-idx3-ubyte.gz", im, sizeof im);
    put_raw("idx", "labels2-idx1-ubyte", lb, sizeof lb);
    put_gz("idx", "labels2-idx1-ubyte.gz", lb, sizeof lb);
    unsigned char tiny[16 + 4] = { 0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 2, 0, 255, 9, 1 };
    put_raw("idx", "tiny-1x2x2", tiny, sizeof tiny);
}

static void seeds_cifar(const char *data)
{
    enum { R = DATA_CIFAR_RECORD };
    static unsigned char rec[2 * R];
    char path[4096];
    snprintf(path, sizeof path, "%s/cifar/%s", data ? data : "", DATA_CIFAR_TRAIN);
    if (!data || read_prefix(path, rec, sizeof rec) != sizeof rec) {
        for (int i = 0; i < 2 * R; i++) rec[i] = (unsigned char)(i * 13 % 251);
        rec[0] = 6, rec[R] = 9;
        printf("fuzz-seeds: no CIFAR-10 under the data root: CIFAR seeds built from scratch\n");
    }
    put_raw("cifar", "two-records.bin", rec, sizeof rec);
    put_gz("cifar", "two-records.bin.gz", rec, sizeof rec);
    put_gz("cifar", "one-record.bin.gz", rec, R);
    /* fuzz-cifar-batches: byte 0 = 1 (batches of 2 records), then the file. */
    static unsigned char batch[1 + 2 * R];
    batch[0] = 1;
    memcpy(batch + 1, rec, sizeof rec);
    put_raw("cifar-batches", "batch-of-two.bin", batch, sizeof batch);
}

/* ---- PNGs and zips --------------------------------------------------------- */

typedef struct blob { unsigned char *b; size_t n; } blob;

static void chunk(blob *p, const char *type, const unsigned char *d, size_t n)
{
    put_be32(p->b + p->n, (uint32_t)n);
    memcpy(p->b + p->n + 4, type, 4);
    if (n) memcpy(p->b + p->n + 8, d, n);
    put_be32(p->b + p->n + 8 + n, (uint32_t)crc32(0L, p->b + p->n + 4, (uInt)(4 + n)));
    p->n += 12 + n;
}

/* A 105x105 gray PNG of `depth` bits (1 or 8), white with a short black
 * diagonal, as the tests build them. */
static blob png_make(int depth)
{
    size_t stride = 1 + (105 * (size_t)depth + 7) / 8, raw_n = 105 * stride;
    unsigned char *raw = malloc(raw_n);
    uLongf zn = compressBound((uLong)raw_n);
    unsigned char *z = malloc(zn);
    blob p = { malloc(8 + 25 + 12 + zn + 12), 8 };
    if (!raw || !z || !p.b) die("out of memory", NULL);
    memset(raw, 0xff, raw_n);
    for (int r = 0; r < 105; r++) {
        raw[r * stride] = 0;
        if (r < 20) { /* pixel (r, r) black */
            if (depth == 8) raw[r * stride + 1 + (size_t)r] = 0;
            else raw[r * stride + 1 + (size_t)r / 8] &= (unsigned char)~(0x80 >> (r % 8));
        }
    }
    if (compress2(z, &zn, raw, (uLong)raw_n, 9) != Z_OK) die("compress", NULL);
    memcpy(p.b, "\x89PNG\r\n\x1a\n", 8);
    unsigned char ihdr[13] = { 0 };
    put_be32(ihdr, 105), put_be32(ihdr + 4, 105), ihdr[8] = (unsigned char)depth;
    chunk(&p, "IHDR", ihdr, 13);
    chunk(&p, "IDAT", z, zn);
    chunk(&p, "IEND", NULL, 0);
    free(raw);
    free(z);
    return p;
}

/* The 20 PNGs of the first character in images_background.zip (into
 * png[0..20)); false when the zip is not there. */
static bool real_pngs(const char *data, blob png[20])
{
    char path[4096];
    snprintf(path, sizeof path, "%s/omniglot/%s", data ? data : "", DATA_OMNIGLOT_BACKGROUND);
    int err;
    zip_t *za = data ? zip_open(path, ZIP_RDONLY, &err) : NULL;
    if (!za) return false;
    int got = 0;
    zip_int64_t n = zip_get_num_entries(za, 0);
    for (zip_int64_t i = 0; i < n && got < 20; i++) {
        const char *name = zip_get_name(za, (zip_uint64_t)i, 0);
        zip_stat_t st;
        size_t len = name ? strlen(name) : 0;
        if (len < 11 || strcmp(name + len - 4, ".png") != 0 ||
            zip_stat_index(za, (zip_uint64_t)i, 0, &st) != 0 || st.size > 4096)
            continue;
        blob *p = &png[got];
        p->n = (size_t)st.size;
        p->b = malloc(p->n ? p->n : 1);
        zip_file_t *zf = zip_fopen_index(za, (zip_uint64_t)i, 0);
        if (!p->b || !zf || zip_fread(zf, p->b, st.size) != (zip_int64_t)st.size)
            die(path, "cannot read its first PNGs");
        zip_fclose(zf);
        got++;
    }
    zip_discard(za);
    if (got < 20) die(path, "fewer than 20 PNGs");
    return true;
}

/* OUT/omniglot_zip/name: one character of png[0..20), stored or deflated. */
static void put_zip(const char *name, blob png[20], bool deflate)
{
    const char *path = seed_path("omniglot-zip", name);
    int err;
    zip_t *za = zip_open(path, ZIP_CREATE | ZIP_TRUNCATE, &err);
    if (!za) die(path, "cannot create the zip");
    for (int d = 0; d < 20; d++) {
        char entry[128];
        snprintf(entry, sizeof entry, "images_background/Alpha/character01/0001_%02d.png", d + 1);
        zip_source_t *src = zip_source_buffer(za, png[d].b, png[d].n, 0);
        zip_int64_t at = src ? zip_file_add(za, entry, src, ZIP_FL_ENC_UTF_8) : -1;
        if (at < 0 || zip_set_file_compression(za, (zip_uint64_t)at,
                                               deflate ? ZIP_CM_DEFLATE : ZIP_CM_STORE, 0) != 0)
            die(path, zip_strerror(za));
    }
    if (zip_close(za) != 0) die(path, zip_strerror(za));
    n_written++;
}

static void seeds_png(const char *data)
{
    blob png[20];
    blob made[2] = { png_make(1), png_make(8) };
    put_raw("png", "made-1bit.png", made[0].b, made[0].n);
    put_raw("png", "made-8bit.png", made[1].b, made[1].n);
    bool real = real_pngs(data, png);
    if (!real) {
        printf("fuzz-seeds: no Omniglot under the data root: zip seeds built from scratch\n");
        for (int d = 0; d < 20; d++) png[d] = png_make(d % 2 ? 8 : 1);
    }
    for (int d = 0; real && d < 4; d++) {
        char name[32];
        snprintf(name, sizeof name, "omniglot-%02d.png", d + 1);
        put_raw("png", name, png[d].b, png[d].n);
    }
    put_zip("one-character-stored.zip", png, false);
    put_zip("one-character-deflated.zip", png, true);
    for (int d = 0; d < 20; d++) free(png[d].b);
    free(made[0].b);
    free(made[1].b);
}

/* ---- checkpoints and .npy ------------------------------------------------- */

/* The fields of a checkpoint as a program writes them: fuzz_ckpt.c reads
 * "rng", "adam" (over 3 numbers) and names starting with 't' (tables) as
 * such, with byte 1 = 2, 3 columns. */
static void seeds_ckpt(void)
{
    ex_ckpt c;
    ad_rng rng;
    ad_rng_seed(&rng, 7);
    ad_value *p = ad_param_from(1, (int[]){ 3 }, (ad_real[]){ 0.5, -1, 2 });
    ad_value *g = ad_tensor_from(1, (int[]){ 3 }, (ad_real[]){ 0.1, 0.2, -0.3 });
    opt_outer adam, adam2; /* adam2: the same numbers in two groups, 1 + 2 (layout version 2) */
    ad_value *q[2] = { ad_param_scalar(0.5), ad_param_from(1, (int[]){ 2 }, (ad_real[]){ -1, 2 }) };
    ad_value *gq[2] = { ad_tensor_scalar(0.1),
                        ad_tensor_from(1, (int[]){ 2 }, (ad_real[]){ 0.2, -0.3 }) };
    if (!p || !g || opt_outer_init(&adam, OPT_ADAM, 0.1, true, 1, &p) != AD_OK ||
        opt_outer_step(&adam, &g) != AD_OK ||
        opt_outer_init(&adam2, OPT_ADAM, 0.1, true, 1, q) != AD_OK ||
        opt_outer_add_group(&adam2, 0.01, false, 1, q + 1) != AD_OK ||
        opt_outer_step(&adam2, gq) != AD_OK)
        die("cannot make an Adam state", ad_error());
    ex_table t = { .name = "tr", .header = "a,b,c", .fmt = "%g", .n_cols = 3 };
    if (ex_table_push(&t, (double[]){ 1, 0.5, 2 }) != AD_OK ||
        ex_table_push(&t, (double[]){ 2, 0.25, 3 }) != AD_OK)
        die("cannot make a table", ad_error());
    if (ex_ckpt_begin(&c) != AD_OK) die("checkpoint", ad_error());
    ex_ckpt_put_text(&c, "run", "seed run K=1");
    ex_ckpt_put_int(&c, "iter", 2);
    ex_ckpt_put_reals(&c, "lambda", p->data, p->size);
    ex_ckpt_put_rng(&c, "rng", &rng);
    ex_ckpt_put_f64(&c, "seconds", (double[]){ 1.5, 0.25 }, 2);
    ex_ckpt_put_outer(&c, "adam", &adam);
    ex_ckpt_put_outer(&c, "adam2", &adam2);
    ex_ckpt_put_table(&c, &t);
    ex_ckpt_put_int(&c, "test_tasks", 10);
    if (c.rc != AD_OK || fclose(c.f) != 0) die("checkpoint", ad_error());
    c.f = NULL;
    size_t n = 2 + c.len;
    unsigned char *b = malloc(n + 128);
    if (!b) die("out of memory", NULL);
    b[0] = 1, b[1] = 2; /* the fields alone; 3 columns */
    memcpy(b + 2, c.buf, c.len);
    put_raw("ckpt", "fields.bin", b, n);
    b[0] = 0; /* a whole file, header line included */
    int h = snprintf((char *)b + 2, 128, "hypertape-checkpoint 1 fuzz 1 %zu %08lx\n", c.len,
                     crc32_z(0L, (const Bytef *)c.buf, c.len));
    memcpy(b + 2 + h, c.buf, c.len);
    put_raw("ckpt", "file.bin", b, 2 + (size_t)h + c.len);
    free(b);
    ex_ckpt_free(&c);
    ex_table_free(&t);
    opt_outer_free(&adam);
    opt_outer_free(&adam2);
    for (int i = 0; i < 2; i++) ad_value_free(q[i]), ad_value_free(gq[i]);
    ad_value_free(p);
    ad_value_free(g);
}

static void seeds_npy(void)
{
    ad_value *v[2] = { ad_tensor_from(2, (int[]){ 2, 3 }, (ad_real[]){ 1.5, -2, 0.25, 3, 4, -1 }),
                       ad_tensor_scalar(0.5) };
    const char *names[2] = { "matrix.npy", "scalar.npy" };
    for (int i = 0; i < 2; i++) {
        if (!v[i] || ad_save_npy(seed_path("npy", names[i]), v[i]) != AD_OK)
            die("cannot write a .npy seed", ad_error());
        n_written++;
        ad_value_free(v[i]);
    }
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: fuzz-seeds OUT [DATA_ROOT]   (DATA_ROOT: $HYPERTAPE_DATA)\n");
        return 2;
    }
    out_root = argv[1];
    const char *data = argc > 2 ? argv[2] : getenv("HYPERTAPE_DATA");
    if (data && !data[0]) data = NULL;
    seeds_idx(data);
    seeds_cifar(data);
    seeds_png(data);
    seeds_ckpt();
    seeds_npy();
    printf("fuzz-seeds: %d seeds in %s (data: %s)\n", n_written, out_root,
           data ? data : "none, built from scratch");
    return 0;
}
