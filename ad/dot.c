/* dot.c — the graph behind a value, in Graphviz DOT, for teaching.
 * Render with:  dot -Tpng graph.dot -o graph.png */
#include <stdlib.h>

#include "internal.h"

static bool seen(const value_list *l, const ad_value *v)
{
    for (size_t i = 0; i < l->n; i++)
        if (l->v[i] == v) return true;
    return false;
}

static void write_node(FILE *out, const ad_value *v)
{
    char shape[64];
    ad_shape_str(v, shape, sizeof shape);
    const char *what = v->op ? v->op->name
                       : v->step == -2 ? "carried constant"
                       : v->requires_grad ? "parameter" : "constant";
    fprintf(out, "  v%llu [label=\"%s%s%s\\n%s", (unsigned long long)v->id,
            v->name ? v->name : "", v->name ? ": " : "", what, shape);
    if (v->step >= 0) fprintf(out, "\\nstep %ld", v->step);
    fprintf(out, "\", shape=%s%s];\n", v->op ? "box" : "ellipse",
            v->step == -2 ? ", style=dashed" : v->requires_grad && !v->op
                                                   ? ", style=bold" : "");
}

int ad_dot_write(FILE *out, ad_value *root)
{
    if (!out) return ad_fail(AD_EARG, "dot: file is NULL");
    int live = value_check_arg(NULL, "dot", "the root", root); /* NULL, or released */
    if (live != AD_OK) return live;
    value_list pending = { 0 }, done = { 0 };
    int rc = value_list_push(&pending, root);
    fprintf(out, "digraph hypertape {\n  rankdir=BT;\n  node [fontname=\"Helvetica\"];\n");
    while (rc == AD_OK && pending.n > 0) {
        ad_value *v = pending.v[--pending.n];
        if (seen(&done, v)) continue;
        if ((rc = value_list_push(&done, v)) != AD_OK) break;
        write_node(out, v);
        for (int i = 0; i < v->n_inputs && rc == AD_OK; i++) {
            fprintf(out, "  v%llu -> v%llu;\n", (unsigned long long)v->inputs[i]->id,
                    (unsigned long long)v->id);
            rc = value_list_push(&pending, v->inputs[i]);
        }
    }
    fprintf(out, "}\n");
    free(pending.v);
    free(done.v);
    if (rc == AD_OK && ferror(out)) rc = ad_fail(AD_EIO, "dot: write failed");
    return rc;
}
