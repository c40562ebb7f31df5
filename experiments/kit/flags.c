/* flags.c — the flag table: defaults, strict parsing, --help; see kit.h. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "experiments/kit/kit.h"

static const char *prog_name = "experiment";

const char *ex_prog(void) { return prog_name; }

int ex_exit(int rc)
{
    if (rc == AD_OK) return 0;
    /* A failure every rank learnt from ex_par_agree is rank 0's to print:
     * once.  Any other may be this rank's alone. */
    if (ex_par_rank() == 0) fprintf(stderr, "%s: %s\n", prog_name, ad_error());
    else if (!ex_par_agreed(ad_error()))
        fprintf(ex_err(), "%s: rank %d: %s\n", prog_name, ex_par_rank(), ad_error());
    return rc == EX_EUSAGE ? EX_EXIT_USAGE : EX_EXIT_LIB;
}

int ex_usage_error(const char *fmt, ...)
{
    fprintf(stderr, "%s: ", prog_name);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(%s --help explains the flags)\n", prog_name);
    return EX_EXIT_USAGE;
}

/* ---- numbers ---------------------------------------------------------------
 * strtol, strtoull and strtod skip leading white space (and strtoull takes
 * "-1" as 2^64 − 1): so each parser looks at the first character itself. */

bool ex_parse_int(const char *s, int lo, int hi, int *out)
{
    if (isspace((unsigned char)*s)) return false;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end != '\0' || errno == ERANGE || v < lo || v > hi) return false;
    *out = (int)v;
    return true;
}

bool ex_parse_double(const char *s, double *out)
{
    if (isspace((unsigned char)*s)) return false;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || errno == ERANGE || !isfinite(v)) return false;
    *out = v;
    return true;
}

static bool parse_u64(const char *s, uint64_t *out)
{
    if (!isdigit((unsigned char)*s)) return false; /* no sign, no space */
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end != '\0' || errno == ERANGE) return false;
    *out = v;
    return true;
}

static bool has_range(const ex_flag *f) { return f->lo != f->hi; }

static int int_lo(const ex_flag *f) { return has_range(f) ? (int)f->lo : -2147483647; }
static int int_hi(const ex_flag *f) { return has_range(f) ? (int)f->hi : 2147483647; }

static bool real_in_range(const ex_flag *f, double v)
{
    if (!has_range(f)) return true;
    bool lo_ok = f->open & EX_OPEN_LO ? v > f->lo : v >= f->lo;
    bool hi_ok = f->open & EX_OPEN_HI ? v < f->hi : v <= f->hi;
    return lo_ok && hi_ok;
}

/* The range of a number in words: "1..100000", "> 0", "in [0, 1]". */
static void range_words(const ex_flag *f, char *buf, size_t len)
{
    buf[0] = '\0';
    if (!has_range(f)) return;
    if (f->type != EX_REAL) snprintf(buf, len, "%d..%d", int_lo(f), int_hi(f));
    else if (isinf(f->hi)) snprintf(buf, len, "%s %g", f->open & EX_OPEN_LO ? ">" : ">=", f->lo);
    else
        snprintf(buf, len, "in %c%g, %g%c", f->open & EX_OPEN_LO ? '(' : '[', f->lo, f->hi,
                 f->open & EX_OPEN_HI ? ')' : ']');
}

static size_t text_max(const ex_flag *f) { return f->hi > 0 ? (size_t)f->hi : EX_PATH_LEN - 256; }

/* What the flag wants, for messages: "a whole number in 1..100000". */
static void wants(const ex_flag *f, char *buf, size_t len)
{
    char r[64];
    range_words(f, r, sizeof r);
    switch (f->type) {
    case EX_INT: snprintf(buf, len, "a whole number%s%s", *r ? " in " : "", r); break;
    case EX_INTS:
        snprintf(buf, len, "up to %d whole numbers%s%s separated by commas", f->max_n,
                 *r ? " in " : "", r);
        break;
    case EX_REAL: snprintf(buf, len, "a finite number%s%s", *r ? " " : "", r); break;
    case EX_SEED: snprintf(buf, len, "a whole number >= 0"); break;
    case EX_CHOICE: snprintf(buf, len, "one of %s", f->choices); break;
    case EX_PAIR: snprintf(buf, len, "two finite numbers 'A,B'"); break;
    default: snprintf(buf, len, "a value of 1..%zu bytes", text_max(f)); break;
    }
}

static bool parse_ints(const ex_flag *f, const char *s, char *why, size_t why_len)
{
    int *out = f->dest, n = 0;
    for (;;) { /* s is at the start of an entry */
        const char *comma = strchr(s, ',');
        char tok[32];
        size_t len = comma ? (size_t)(comma - s) : strlen(s);
        if (len >= sizeof tok || n == f->max_n) return false;
        memcpy(tok, s, len);
        tok[len] = '\0';
        if (!ex_parse_int(tok, int_lo(f), int_hi(f), &out[n])) return false;
        for (int j = 0; j < n; j++)
            if (out[j] == out[n]) {
                snprintf(why, why_len, "%d is given twice", out[n]);
                return false;
            }
        n++;
        if (!comma) break;
        s = comma + 1;
    }
    *f->n = n;
    return true;
}

static bool is_choice(const char *choices, const char *s)
{
    size_t n = strlen(s);
    for (const char *p = choices; n > 0 && (p = strstr(p, s)); p += n)
        if ((p == choices || p[-1] == '|') && (p[n] == '|' || p[n] == '\0')) return true;
    return false;
}

/* Reads s into f->dest; false (why may say more) when it is not a value of
 * the flag's type and range. */
static bool parse_value(const ex_flag *f, const char *s, char *why, size_t why_len)
{
    double d, xy[2];
    switch (f->type) {
    case EX_SWITCH: *(bool *)f->dest = true; return true;
    case EX_INT: return ex_parse_int(s, int_lo(f), int_hi(f), f->dest);
    case EX_INTS: return parse_ints(f, s, why, why_len);
    case EX_SEED: return parse_u64(s, f->dest);
    case EX_REAL:
        if (!ex_parse_double(s, &d) || !real_in_range(f, d)) return false;
        *(double *)f->dest = d;
        return true;
    case EX_PAIR: {
        const char *comma = strchr(s, ',');
        char first[64];
        if (!comma || (size_t)(comma - s) >= sizeof first) return false;
        memcpy(first, s, (size_t)(comma - s));
        first[comma - s] = '\0';
        if (!ex_parse_double(first, &xy[0]) || !ex_parse_double(comma + 1, &xy[1])) return false;
        memcpy(f->dest, xy, sizeof xy);
        return true;
    }
    case EX_CHOICE:
        if (!is_choice(f->choices, s)) return false;
        *(const char **)f->dest = s;
        return true;
    default:
        if (!*s) return false;
        if (strlen(s) > text_max(f)) {
            snprintf(why, why_len, "path too long (more than %zu bytes)", text_max(f));
            return false;
        }
        *(const char **)f->dest = s;
        return true;
    }
}

/* ---- --help ---------------------------------------------------------------- */

/* Columns of n bytes of UTF-8: continuation bytes take none. */
static int width(const char *s, size_t n)
{
    int w = 0;
    for (size_t i = 0; i < n; i++) w += ((unsigned char)s[i] & 0xC0) != 0x80;
    return w;
}

/* Prints text from column `col` on, wrapped before column 80, later lines
 * indented to col; `at` is the column the cursor is at. */
static void wrap(FILE *out, const char *text, int at, int col)
{
    if (at > col) {
        fputc('\n', out);
        at = 0;
    }
    fprintf(out, "%*s", col - at, "");
    at = col;
    for (const char *p = text; *p;) {
        size_t w = strcspn(p, " ");
        if (at > col && at + 1 + width(p, w) > 79) {
            fprintf(out, "\n%*s", col, "");
            at = col;
        } else if (at > col) {
            fputc(' ', out);
            at++;
        }
        fwrite(p, 1, w, out);
        at += width(p, w);
        p += w;
        while (*p == ' ') p++;
    }
    fputc('\n', out);
}

/* The value's name in --help, unless the flag gives one: by type. */
static const char *const type_meta[] = {
    [EX_SWITCH] = "", [EX_INT] = "N", [EX_INTS] = "LIST", [EX_REAL] = "X", [EX_SEED] = "S",
    [EX_TEXT] = "TEXT", [EX_CHOICE] = "NAME", [EX_PAIR] = "A,B",
};

static const char *meta(const ex_flag *f) { return f->meta ? f->meta : type_meta[f->type]; }

static void print_help(const ex_cmd *c)
{
    fprintf(stdout, "usage: %s %s\n\n%s\n", c->prog, c->usage, c->about ? c->about : "");
    for (int i = 0; i < c->n_flags; i++) {
        const ex_flag *f = &c->flags[i];
        char line[1024], r[64], choices[128] = "";
        range_words(f, r, sizeof r);
        if (f->type == EX_CHOICE) snprintf(choices, sizeof choices, "%s", f->choices);
        for (char *p = choices; (p = strchr(p, '|'));) *p = '/';
        const char *what = *r ? r : choices;
        int n = snprintf(line, sizeof line, "%s", f->help);
        if (*what || f->def || f->quick)
            snprintf(line + n, sizeof line - (size_t)n, " (%s%s%s%s%s%s)", what,
                     *what && f->def ? "; " : "", f->def ? "default " : "", f->def ? f->def : "",
                     f->quick ? "; --quick " : "", f->quick ? f->quick : "");
        const char *m = meta(f);
        fprintf(stdout, "  %s%s%s", f->name, *m ? " " : "", m);
        wrap(stdout, line, 2 + width(f->name, strlen(f->name)) + (*m ? 1 + width(m, strlen(m)) : 0), 21);
    }
    fprintf(stdout, "  -h, --help%*sthis text\n", 9, "");
    fprintf(stdout, "Values follow a flag after '=' or as the next argument.\n%s",
            c->after ? c->after : "");
}

/* ---- parsing ---------------------------------------------------------------- */

static int find_flag(const ex_cmd *c, const char *name, size_t len)
{
    for (int i = 0; i < c->n_flags; i++)
        if (strlen(c->flags[i].name) == len && !strncmp(c->flags[i].name, name, len)) return i;
    return -1;
}

bool ex_given(const ex_cmd *cmd, const char *name)
{
    int i = find_flag(cmd, name, strlen(name));
    return i >= 0 && (cmd->given >> i & 1);
}

/* The defaults, or the --quick ones when quick; they are the program's own
 * text, so one that does not parse is a bug in the table. */
static void set_defaults(const ex_cmd *c, bool quick)
{
    for (int i = 0; i < c->n_flags; i++) {
        const ex_flag *f = &c->flags[i];
        const char *def = quick && f->quick ? f->quick : f->def;
        char why[64];
        if (def && !parse_value(f, def, why, sizeof why)) {
            fprintf(stderr, "%s: BUG: the default '%s' of %s does not parse\n", c->prog, def,
                    f->name);
            abort();
        }
    }
}

static int bad_value(const ex_flag *f, const char *val, const char *why)
{
    char w[160];
    wants(f, w, sizeof w);
    if (*why) fprintf(stderr, "%s: %s: %s\n", prog_name, f->name, why);
    else fprintf(stderr, "%s: %s: expected %s, got '%s'\n", prog_name, f->name, w, val);
    fprintf(stderr, "(%s wants %s; %s --help explains the flags)\n", f->name, w, prog_name);
    return EX_EXIT_USAGE;
}

/* One pass over argv after setting the defaults (the --quick ones when
 * quick). */
static int parse_pass(ex_cmd *c, int argc, char **argv, bool quick)
{
    c->given = 0;
    set_defaults(c, quick);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            print_help(c);
            return -1;
        }
        if (strncmp(a, "--", 2) != 0) return ex_usage_error("unexpected argument '%s'", a);
        const char *eq = strchr(a, '=');
        size_t len = eq ? (size_t)(eq - a) : strlen(a);
        int k = find_flag(c, a, len);
        if (k < 0) return ex_usage_error("unknown flag '%.*s'", (int)len, a);
        const ex_flag *f = &c->flags[k];
        if (f->type == EX_SWITCH && eq) return ex_usage_error("%s takes no value", f->name);
        if (f->type != EX_SWITCH) {
            if (eq) val = eq + 1;
            else if (i + 1 < argc) val = argv[++i];
            else return ex_usage_error("%s needs a value", f->name);
        }
        char why[64] = "";
        if (!parse_value(f, val, why, sizeof why)) return bad_value(f, val, why);
        c->given |= (uint64_t)1 << k;
    }
    return 0;
}

int ex_flags_parse(ex_cmd *c, int argc, char **argv)
{
    prog_name = c->prog;
    if (c->n_flags > 64) {
        fprintf(stderr, "%s: BUG: more than 64 flags\n", c->prog);
        abort();
    }
    /* Whether --quick is there is known after a pass; then the quick
     * defaults apply, and flags given explicitly are read again over them. */
    int rc = parse_pass(c, argc, argv, false);
    if (rc == 0 && ex_given(c, "--quick")) rc = parse_pass(c, argc, argv, true);
    return rc == 0 && c->check ? c->check() : rc;
}
