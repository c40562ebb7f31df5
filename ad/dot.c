/* dot.c — the graph behind values, in Graphviz DOT, for teaching.
 * Render with:  dot -Tpng graph.dot -o graph.png
 *
 * The default is compact: one box per value (op, shape, step), an arrow from
 * each input to its user.  The options add what a lesson needs (see
 * ad_dot_opts in ad.h); docs/guide.md draws its figures with them. */
#include <stdlib.h>

#include "internal.h"

static bool seen(const value_list *l, const ad_value *v)
{
    for (size_t i = 0; i < l->n; i++)
        if (l->v[i] == v) return true;
    return false;
}

/* A label may hold any name the caller chose: quotes and backslashes are
 * escaped, a newline becomes DOT's line break. */
static void write_escaped(FILE *out, const char *s)
{
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fputc('\\', out);
        if (*s == '\n') fputs("\\n", out);
        else fputc(*s, out);
    }
}

/* true when every entry of v equals the first (so one number describes it). */
static bool uniform(const ad_value *v)
{
    for (size_t i = 1; i < v->size; i++)
        if (v->data[i] != v->data[0]) return false;
    return true;
}

/* The name an unnamed constant gets under opts->names: what it holds, when
 * that is one number ("ones", "zeros", "0.5"); NULL otherwise. */
static const char *content_name(const ad_value *v, char *buf, size_t len)
{
    if (v->op || v->requires_grad || !v->data || !uniform(v)) return NULL; /* !data: dropped */
    double c = v->data[0];
    if (v->size > 1 && (c == 0 || c == 1)) return c == 0 ? "zeros" : "ones";
    snprintf(buf, len, "%.4g", c);
    return buf;
}

/* "= 0.1411" for a scalar, "= [2, 1.8, …]" for the first n entries of a tensor. */
static void write_entries(FILE *out, const ad_value *v, int n)
{
    if (!v->data) { /* a lean tape gave them back when the step closed */
        fputs("\\n= (dropped)", out);
        return;
    }
    if (v->rank == 0) {
        fprintf(out, "\\n= %.4g", (double)v->data[0]);
        return;
    }
    fputs("\\n= [", out);
    for (size_t i = 0; i < v->size && i < (size_t)n; i++)
        fprintf(out, i ? ", %.4g" : "%.4g", (double)v->data[i]);
    fputs(v->size > (size_t)n ? ", …]" : "]", out);
}

static void write_node(FILE *out, const ad_value *v, const ad_dot_opts *o, const char *indent)
{
    char shape[64], num[32];
    ad_shape_str(v, shape, sizeof shape);
    const char *what = v->op ? v->op->name
                       : v->step == -2 ? "carried constant"
                       : v->requires_grad ? "parameter" : "constant";
    const char *name = v->name ? v->name : o->names ? content_name(v, num, sizeof num) : NULL;
    fprintf(out, "%sv%llu [label=\"", indent, (unsigned long long)v->id);
    if (o->ids) fprintf(out, "#%llu ", (unsigned long long)v->id);
    if (name) {
        write_escaped(out, name);
        fputs(": ", out);
    }
    fprintf(out, "%s\\n%s", what, shape);
    if (v->step >= 0 && !o->steps) fprintf(out, "\\nstep %ld", v->step); /* else framed */
    if (o->values > 0) write_entries(out, v, o->values);
    fprintf(out, "\", shape=%s%s];\n", v->op ? "box" : "ellipse",
            v->step == -2 ? ", style=dashed" : v->requires_grad && !v->op
                                                   ? ", style=bold" : "");
}

/* Every value that reaches one of the roots, in the order a depth-first walk
 * from the last root meets them. */
static int reachable(int n, ad_value *const *roots, value_list *done)
{
    value_list pending = { 0 };
    int rc = AD_OK;
    for (int k = 0; k < n && rc == AD_OK; k++) rc = value_list_push(&pending, roots[k]);
    while (rc == AD_OK && pending.n > 0) {
        ad_value *v = pending.v[--pending.n];
        if (seen(done, v)) continue;
        rc = value_list_push(done, v);
        for (int i = 0; i < v->n_inputs && rc == AD_OK; i++)
            rc = value_list_push(&pending, v->inputs[i]);
    }
    free(pending.v);
    return rc;
}

/* With opts->steps: one frame per step, oldest first, around the values it made. */
static void write_steps(FILE *out, const value_list *all, const ad_dot_opts *o)
{
    long last = -1;
    for (;;) {
        long s = -1; /* the next step after `last` that some value names */
        for (size_t i = 0; i < all->n; i++)
            if (all->v[i]->step > last && (s < 0 || all->v[i]->step < s)) s = all->v[i]->step;
        if (s < 0) return;
        fprintf(out, "  subgraph cluster_step%ld {\n", s);
        fprintf(out, "    label=\"step %ld\"; color=gray; fontname=\"Helvetica\";\n", s);
        for (size_t i = 0; i < all->n; i++)
            if (all->v[i]->step == s) write_node(out, all->v[i], o, "    ");
        fputs("  }\n", out);
        last = s;
    }
}

int ad_dot_write_opts(FILE *out, int n, ad_value *const *roots, const ad_dot_opts *opts)
{
    if (!out) return ad_fail(AD_EARG, "dot: file is NULL");
    if (n < 1 || !roots) return ad_fail(AD_EARG, "dot: the root list is NULL or empty");
    for (int k = 0; k < n; k++) { /* NULL or released roots are reported, not walked */
        int live = value_check_node_arg(NULL, "dot", "the root", roots[k]); /* data: not needed */
        if (live != AD_OK) return live;
    }
    const ad_dot_opts o = opts ? *opts : (ad_dot_opts){ 0 };
    if (o.values < 0) return ad_fail(AD_EARG, "dot: values = %d is negative", o.values);
    value_list all = { 0 };
    int rc = reachable(n, roots, &all);
    if (rc == AD_OK) {
        fprintf(out, "digraph hypertape {\n  rankdir=BT;\n  node [fontname=\"Helvetica\"];\n");
        if (o.input_index) fprintf(out, "  edge [fontname=\"Helvetica\", fontsize=10];\n");
        if (o.steps) write_steps(out, &all, &o);
        for (size_t i = 0; i < all.n; i++)
            if (!o.steps || all.v[i]->step < 0) write_node(out, all.v[i], &o, "  ");
        for (size_t i = 0; i < all.n; i++) {
            const ad_value *v = all.v[i];
            for (int k = 0; k < v->n_inputs; k++) {
                fprintf(out, "  v%llu -> v%llu", (unsigned long long)v->inputs[k]->id,
                        (unsigned long long)v->id);
                if (o.input_index) fprintf(out, " [label=\"%d\"]", k);
                fputs(";\n", out);
            }
        }
        fprintf(out, "}\n");
    }
    free(all.v);
    if (rc == AD_OK && ferror(out)) rc = ad_fail(AD_EIO, "dot: write failed");
    return rc;
}

int ad_dot_write(FILE *out, ad_value *root)
{
    return ad_dot_write_opts(out, 1, &root, NULL);
}
