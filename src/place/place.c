/* place.c — the placement planner (place.h): size and budget parsing, the
 * module tree from dotted names, accelerate's get_balanced_memory and
 * infer_auto_device_map (one greedy pass over a queue of modules and
 * tensors), clean_device_map, and the JSON printer. Not the executor: it
 * moves no weights. */
#include "place/place.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- sizes and budgets ------------------------------------------------ */

tdm_status tdm_size_parse(const char *s, int64_t *bytes) {
    if (!s) return tdm_errorf(TDM_ERR_INVALID_ARG, "size: missing");
    const char *b = s, *e = s + strlen(s);
    while (b < e && isspace((unsigned char)*b)) b++;
    while (e > b && isspace((unsigned char)e[-1])) e--;
    if (b == e) return tdm_errorf(TDM_ERR_INVALID_ARG, "size '%s': empty", s);
    /* the unit: trailing letters */
    const char *u = e;
    while (u > b && isalpha((unsigned char)u[-1])) u--;
    size_t ul = (size_t)(e - u);
    static const struct { const char *name; double mul; } units[] = {
        {"KIB", 1024.0}, {"MIB", 1048576.0}, {"GIB", 1073741824.0}, {"TIB", 1099511627776.0},
        {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
    };
    double mul = 0;
    if (ul) {
        char up[8] = {0};
        if (ul < sizeof up)
            for (size_t i = 0; i < ul; i++) up[i] = (char)toupper((unsigned char)u[i]);
        for (size_t i = 0; i < sizeof units / sizeof *units; i++)
            if (!strcmp(up, units[i].name)) mul = units[i].mul;
        if (mul == 0)
            return tdm_errorf(TDM_ERR_INVALID_ARG,
                              "size '%s': unknown unit '%.*s' (use KB MB GB TB, KiB MiB GiB TiB, or bytes)",
                              s, (int)ul, u);
        if (e[-1] == 'b') {
            char fix[8];
            for (size_t i = 0; i + 1 < ul; i++)
                fix[i] = u[i] == 'i' || u[i] == 'I' ? 'i' : (char)toupper((unsigned char)u[i]);
            fix[ul - 1] = 'B';
            fix[ul] = 0;
            return tdm_errorf(TDM_ERR_INVALID_ARG,
                              "size '%s': a lower-case 'b' means bits; write %s for bytes", s, fix);
        }
    }
    /* the number: digits, one '.', an exponent; no sign, hex, inf or nan */
    const char *ne = u;
    while (ne > b && isspace((unsigned char)ne[-1])) ne--;
    if (ne == b) return tdm_errorf(TDM_ERR_INVALID_ARG, "size '%s': no number", s);
    int digits = 0, dot = 0, exp = 0, intonly = 1;
    for (const char *p = b; p < ne; p++) {
        if (isdigit((unsigned char)*p)) digits++;
        else if (*p == '.' && !dot && !exp) { dot = 1; intonly = 0; }
        else if ((*p == 'e' || *p == 'E') && digits && !exp) {
            exp = 1; intonly = 0;
            if (p + 1 < ne && (p[1] == '+' || p[1] == '-')) p++;
        } else if (*p == '-' && p == b)
            return tdm_errorf(TDM_ERR_INVALID_ARG, "size '%s': negative", s);
        else
            return tdm_errorf(TDM_ERR_INVALID_ARG, "size '%s': not a number", s);
    }
    if (!digits) return tdm_errorf(TDM_ERR_INVALID_ARG, "size '%s': not a number", s);
    if (intonly && !ul) {                    /* plain bytes: exact */
        int64_t v = 0;
        for (const char *p = b; p < ne; p++) {
            int d = *p - '0';
            if (v > (INT64_MAX - d) / 10)
                return tdm_errorf(TDM_ERR_INVALID_ARG, "size '%s': too large", s);
            v = v * 10 + d;
        }
        *bytes = v;
        return TDM_OK;
    }
    if (!ul)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "size '%s': a fraction or exponent needs a unit (e.g. 1.5GB)", s);
    char num[128];
    if ((size_t)(ne - b) >= sizeof num)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "size '%s': number too long", s);
    memcpy(num, b, (size_t)(ne - b));
    num[ne - b] = 0;
    char *end = NULL;
    double x = strtod(num, &end);
    if (!end || *end || !isfinite(x))
        return tdm_errorf(TDM_ERR_INVALID_ARG, "size '%s': not a number", s);
    double v = x * mul;                      /* as Python: float(prefix) * 2**30, then int() */
    if (!(v < 9223372036854775808.0))
        return tdm_errorf(TDM_ERR_INVALID_ARG, "size '%s': too large", s);
    *bytes = (int64_t)v;
    return TDM_OK;
}

static int dev_rank(int dev) {       /* accelerate's order: GPU ids, cpu, disk */
    return dev >= 0 ? dev : dev == TDM_PLACE_CPU ? INT32_MAX - 1 : INT32_MAX;
}

tdm_status tdm_max_memory_set(tdm_max_memory_t *mm, int dev, int64_t bytes) {
    if (dev < TDM_PLACE_DISK || bytes < 0)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "max memory: bad device %d or budget %lld", dev,
                          (long long)bytes);
    int i = 0;
    while (i < mm->n && dev_rank(mm->dev[i]) < dev_rank(dev)) i++;
    if (i < mm->n && mm->dev[i] == dev) {
        mm->bytes[i] = bytes;
        return TDM_OK;
    }
    if (mm->n >= TDM_PLACE_MAX_DEVICES)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "max memory: more than %d devices", TDM_PLACE_MAX_DEVICES);
    memmove(mm->dev + i + 1, mm->dev + i, sizeof *mm->dev * (size_t)(mm->n - i));
    memmove(mm->bytes + i + 1, mm->bytes + i, sizeof *mm->bytes * (size_t)(mm->n - i));
    mm->dev[i] = dev;
    mm->bytes[i] = bytes;
    mm->n++;
    return TDM_OK;
}

tdm_status tdm_max_memory_parse(const char *s, tdm_max_memory_t *mm) {
    memset(mm, 0, sizeof *mm);
    if (!s || !*s) return tdm_errorf(TDM_ERR_INVALID_ARG, "--max-memory: empty");
    const char *p = s;
    for (;;) {
        const char *c = strchr(p, ',');
        size_t len = c ? (size_t)(c - p) : strlen(p);
        char item[256];
        if (len >= sizeof item)
            return tdm_errorf(TDM_ERR_INVALID_ARG, "--max-memory: entry '%.40s...' too long", p);
        memcpy(item, p, len);
        item[len] = 0;
        char *eq = strchr(item, '=');
        if (!eq)
            return tdm_errorf(TDM_ERR_INVALID_ARG,
                              "--max-memory: '%s' is not KEY=SIZE (e.g. 0=16GiB,cpu=64GiB)", item);
        *eq = 0;
        char *k = item, *ke = eq;
        while (*k && isspace((unsigned char)*k)) k++;
        while (ke > k && isspace((unsigned char)ke[-1])) *--ke = 0;
        int dev;
        if (!strcmp(k, "cpu")) dev = TDM_PLACE_CPU;
        else if (!strcmp(k, "disk")) dev = TDM_PLACE_DISK;
        else {
            int ok = *k != 0 && strlen(k) <= 6;
            for (const char *q = k; ok && *q; q++) ok = isdigit((unsigned char)*q);
            if (!ok)
                return tdm_errorf(TDM_ERR_INVALID_ARG,
                                  "--max-memory: unknown device '%s' (use a GPU id such as 0, 'cpu' or 'disk')", k);
            dev = atoi(k);
        }
        for (int i = 0; i < mm->n; i++)
            if (mm->dev[i] == dev)
                return tdm_errorf(TDM_ERR_INVALID_ARG, "--max-memory: device '%s' given twice", k);
        int64_t b;
        if (tdm_size_parse(eq + 1, &b) != TDM_OK) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s", tdm_last_error());
            return tdm_errorf(TDM_ERR_INVALID_ARG, "--max-memory: device '%s': %s", k, msg);
        }
        tdm_status st = tdm_max_memory_set(mm, dev, b);
        if (st != TDM_OK) return st;
        if (!c) break;
        p = c + 1;
    }
    return TDM_OK;
}

tdm_status tdm_place_strategy_parse(const char *s, tdm_place_strategy *out) {
    if (s && !strcmp(s, "sequential")) *out = TDM_PLACE_SEQUENTIAL;
    else if (s && (!strcmp(s, "auto") || !strcmp(s, "balanced"))) *out = TDM_PLACE_BALANCED;
    else if (s && !strcmp(s, "balanced_low_0")) *out = TDM_PLACE_BALANCED_LOW_0;
    else
        return tdm_errorf(TDM_ERR_INVALID_ARG,
                          "device map '%s': use auto, balanced, balanced_low_0 or sequential", s ? s : "");
    return TDM_OK;
}

/* ---- the module tree -------------------------------------------------- */

typedef struct { int64_t *v; int64_t n, cap; } ivec_t;

static int iv_push(ivec_t *a, int64_t x) {
    if (a->n == a->cap) {
        int64_t nc = a->cap ? a->cap * 2 : 8;
        int64_t *q = realloc(a->v, sizeof *q * (size_t)nc);
        if (!q) return 0;
        a->v = q;
        a->cap = nc;
    }
    a->v[a->n++] = x;
    return 1;
}

/* Inserts b's n items at position i of a. */
static int iv_insert(ivec_t *a, int64_t i, const int64_t *b, int64_t n) {
    while (a->n + n > a->cap) {
        int64_t nc = a->cap ? a->cap * 2 : 8;
        int64_t *q = realloc(a->v, sizeof *q * (size_t)nc);
        if (!q) return 0;
        a->v = q;
        a->cap = nc;
    }
    memmove(a->v + i + n, a->v + i, sizeof *a->v * (size_t)(a->n - i));
    memcpy(a->v + i, b, sizeof *b * (size_t)n);
    a->n += n;
    return 1;
}

static void iv_remove(ivec_t *a, int64_t i) {
    memmove(a->v + i, a->v + i + 1, sizeof *a->v * (size_t)(a->n - i - 1));
    a->n--;
}

typedef struct {
    char   *name;          /* full dotted path; "" = root */
    int64_t parent;        /* -1 for the root */
    int64_t size;          /* bytes of the (non-duplicate) tensors at or under it */
    int     tensor;        /* 1: a parameter or buffer */
    int     buffer;
    int     real;          /* holds a tensor of the list (not only tied duplicates) */
    int     nosplit;
    int     cls;           /* no-split class index, -1 */
    int     depth;
    int64_t pre;           /* pre-order index (output order) */
    int     dev;           /* device in the map being built; INT32_MIN = none */
    ivec_t  params, mods, bufs;
} node_t;

typedef struct {
    node_t  *n;
    int64_t  nn, cap;
    int64_t *ht;           /* open addressing, node id + 1; 0 = empty */
    int64_t  htcap;
    int64_t  ncls;
    ivec_t   groups;       /* tied groups: offsets into gmem, -1 separated */
    ivec_t   gmem;         /* node ids, sorted by name within a group, -1 after each group */
} tree_t;

#define NODEV INT32_MIN

static uint64_t hash_str(const char *s, size_t len) { return tdm_fnv(s, len); }

static int64_t find_len(const tree_t *t, const char *s, size_t len) {
    if (!t->htcap) return -1;
    uint64_t m = (uint64_t)t->htcap - 1;
    for (uint64_t h = hash_str(s, len) & m;; h = (h + 1) & m) {
        int64_t id = t->ht[h] - 1;
        if (id < 0) return -1;
        if (strlen(t->n[id].name) == len && !memcmp(t->n[id].name, s, len)) return id;
    }
}

static int64_t find(const tree_t *t, const char *s) { return find_len(t, s, strlen(s)); }

static int ht_put(tree_t *t, int64_t id) {
    if ((t->nn + 1) * 2 > t->htcap) {
        int64_t nc = t->htcap ? t->htcap * 2 : 1024;
        int64_t *h = calloc((size_t)nc, sizeof *h);
        if (!h) return 0;
        free(t->ht);
        t->ht = h;
        t->htcap = nc;
        for (int64_t i = 0; i < t->nn; i++) {
            if (i == id) continue;
            uint64_t m = (uint64_t)nc - 1;
            uint64_t k = hash_str(t->n[i].name, strlen(t->n[i].name)) & m;
            while (h[k]) k = (k + 1) & m;
            h[k] = i + 1;
        }
    }
    uint64_t m = (uint64_t)t->htcap - 1;
    uint64_t k = hash_str(t->n[id].name, strlen(t->n[id].name)) & m;
    while (t->ht[k]) k = (k + 1) & m;
    t->ht[k] = id + 1;
    return 1;
}

static void tree_free(tree_t *t) {
    for (int64_t i = 0; i < t->nn; i++) {
        free(t->n[i].name);
        free(t->n[i].params.v);
        free(t->n[i].mods.v);
        free(t->n[i].bufs.v);
    }
    free(t->n);
    free(t->ht);
    free(t->groups.v);
    free(t->gmem.v);
    memset(t, 0, sizeof *t);
}

/* Appends a node named s[0..len) under parent; returns its id or -1. */
static int64_t add_node(tree_t *t, const char *s, size_t len, int64_t parent, int tensor) {
    if (t->nn == t->cap) {
        int64_t nc = t->cap ? t->cap * 2 : 256;
        node_t *q = realloc(t->n, sizeof *q * (size_t)nc);
        if (!q) return -1;
        t->n = q;
        t->cap = nc;
    }
    node_t *nd = &t->n[t->nn];
    memset(nd, 0, sizeof *nd);
    nd->name = malloc(len + 1);
    if (!nd->name) return -1;
    memcpy(nd->name, s, len);
    nd->name[len] = 0;
    nd->parent = parent;
    nd->tensor = tensor;
    nd->cls = -1;
    nd->dev = NODEV;
    nd->depth = parent < 0 ? 0 : t->n[parent].depth + 1;
    int64_t id = t->nn++;
    if (!ht_put(t, id)) { free(nd->name); t->nn--; return -1; }
    if (parent >= 0 && !tensor && !iv_push(&t->n[parent].mods, id)) return -1;
    return id;
}

/* The module at s[0..len), made with its ancestors if missing. */
static tdm_status module_at(tree_t *t, const char *s, size_t len, int64_t *out) {
    int64_t id = find_len(t, s, len);
    if (id >= 0) {
        if (t->n[id].tensor)
            return tdm_errorf(TDM_ERR_MODEL, "parameter list: '%s' is both a tensor and a module",
                              t->n[id].name);
        *out = id;
        return TDM_OK;
    }
    size_t cut = len;
    while (cut > 0 && s[cut - 1] != '.') cut--;
    if (cut == 1 || (cut > 0 && cut == len) || (cut == 0 && len == 0))
        return tdm_errorf(TDM_ERR_MODEL, "parameter list: empty name component in '%.*s'", (int)len, s);
    int64_t parent;
    tdm_status st = module_at(t, s, cut ? cut - 1 : 0, &parent);
    if (st != TDM_OK) return st;
    if (cut == len) return tdm_errorf(TDM_ERR_MODEL, "parameter list: bad name '%.*s'", (int)len, s);
    id = add_node(t, s, len, parent, 0);
    if (id < 0) return tdm_errorf(TDM_ERR_NOMEM, "planner: out of memory");
    *out = id;
    return TDM_OK;
}

static tdm_status add_tensor(tree_t *t, const char *name, int64_t bytes, int buffer, int real) {
    size_t len = strlen(name);
    if (find_len(t, name, len) >= 0)
        return tdm_errorf(TDM_ERR_MODEL, "parameter list: '%s' appears twice", name);
    const char *dot = strrchr(name, '.');
    size_t plen = dot ? (size_t)(dot - name) : 0;
    if (len == 0 || (dot && (plen == 0 || dot[1] == 0)))
        return tdm_errorf(TDM_ERR_MODEL, "parameter list: bad tensor name '%s'", name);
    int64_t parent;
    tdm_status st = module_at(t, name, plen, &parent);
    if (st != TDM_OK) return st;
    int64_t id = add_node(t, name, len, parent, 1);
    if (id < 0 || !iv_push(buffer ? &t->n[parent].bufs : &t->n[parent].params, id))
        return tdm_errorf(TDM_ERR_NOMEM, "planner: out of memory");
    t->n[id].buffer = buffer;
    for (int64_t a = id; a >= 0; a = t->n[a].parent) {
        t->n[a].size += bytes;
        t->n[a].real |= real;
    }
    return TDM_OK;
}

static int64_t preorder(tree_t *t, int64_t id, int64_t k) {
    node_t *nd = &t->n[id];
    nd->pre = k++;
    for (int64_t i = 0; i < nd->params.n; i++) k = preorder(t, nd->params.v[i], k);
    for (int64_t i = 0; i < nd->mods.n; i++) k = preorder(t, nd->mods.v[i], k);
    for (int64_t i = 0; i < nd->bufs.n; i++) k = preorder(t, nd->bufs.v[i], k);
    return k;
}

/* A no-split path's class key when no class names are given: the path with
 * numeric components as '*' ("down_blocks.*.resnets.*"). */
static void class_key(const char *path, char *out, size_t cap) {
    size_t o = 0;
    for (const char *p = path; *p && o + 2 < cap;) {
        const char *e = strchr(p, '.');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        int num = l > 0;
        for (size_t i = 0; i < l; i++) num &= isdigit((unsigned char)p[i]) != 0;
        if (num) out[o++] = '*';
        else for (size_t i = 0; i < l && o + 2 < cap; i++) out[o++] = p[i];
        if (!e) break;
        out[o++] = '.';
        p = e + 1;
    }
    out[o] = 0;
}

/* Sorts node ids v[0..n) by name (by_name) or by pre-order index; stable. */
static void sort_nodes(const tree_t *t, int64_t *v, int64_t n, int by_name) {
    for (int64_t i = 1; i < n; i++) {
        int64_t x = v[i], j = i;
        while (j > 0 && (by_name ? strcmp(t->n[v[j - 1]].name, t->n[x].name) > 0
                                 : t->n[v[j - 1]].pre > t->n[x].pre)) {
            v[j] = v[j - 1];
            j--;
        }
        v[j] = x;
    }
}

static tdm_status tree_build(const tdm_plist_t *pl, const char *const *nosplit_class, tree_t *t) {
    memset(t, 0, sizeof *t);
    tdm_status st;
    if (add_node(t, "", 0, -1, 0) != 0) return tdm_errorf(TDM_ERR_NOMEM, "planner: out of memory");
    /* parameters, then tied duplicates (size 0), then buffers: named_parameters() order */
    for (int64_t i = 0; i < pl->n; i++)
        if (!pl->e[i].is_buffer)
            TDM_TRY(add_tensor(t, pl->e[i].name, tdm_pentry_bytes(&pl->e[i]), 0, 1));
    for (int64_t i = 0; i < pl->ntied; i++) {
        const char *eq = strchr(pl->tied[i], '=');
        if (!eq || find_len(t, pl->tied[i], (size_t)(eq - pl->tied[i])) < 0)
            return tdm_errorf(TDM_ERR_MODEL, "parameter list: tie '%s' names no parameter", pl->tied[i]);
        if (find(t, eq + 1) < 0) TDM_TRY(add_tensor(t, eq + 1, 0, 0, 0));
    }
    for (int64_t i = 0; i < pl->n; i++)
        if (pl->e[i].is_buffer)
            TDM_TRY(add_tensor(t, pl->e[i].name, tdm_pentry_bytes(&pl->e[i]), 1, 1));
    preorder(t, 0, 0);
    /* no-split marks and classes (modules holding no tensor are not in the tree) */
    char **keys = calloc((size_t)pl->nnosplit + 1, sizeof *keys);
    if (!keys) return tdm_errorf(TDM_ERR_NOMEM, "planner: out of memory");
    for (int64_t i = 0; i < pl->nnosplit; i++) {
        int64_t id = find(t, pl->nosplit[i]);
        if (id <= 0 || t->n[id].tensor) continue;
        char buf[512];
        if (nosplit_class) snprintf(buf, sizeof buf, "%s", nosplit_class[i]);
        else class_key(pl->nosplit[i], buf, sizeof buf);
        int64_t c = 0;
        while (c < t->ncls && strcmp(keys[c], buf)) c++;
        if (c == t->ncls && !(keys[t->ncls++] = strdup(buf))) {
            st = tdm_errorf(TDM_ERR_NOMEM, "planner: out of memory");
            for (int64_t k = 0; k < t->ncls; k++) free(keys[k]);
            free(keys);
            goto fail;
        }
        t->n[id].nosplit = 1;
        t->n[id].cls = (int)c;
    }
    for (int64_t k = 0; k < t->ncls; k++) free(keys[k]);
    free(keys);
    /* tied groups: by first name in the order first met, members sorted as find_tied_parameters does */
    for (int64_t i = 0; i < pl->ntied; i++) {
        const char *eq = strchr(pl->tied[i], '=');
        int64_t first = find_len(t, pl->tied[i], (size_t)(eq - pl->tied[i]));
        int seen = 0;
        for (int64_t j = 0; j < i && !seen; j++)
            seen = !strncmp(pl->tied[j], pl->tied[i], (size_t)(eq - pl->tied[i]) + 1);
        if (seen) continue;
        int64_t start = t->gmem.n;
        if (!iv_push(&t->groups, start) || !iv_push(&t->gmem, first)) goto nomem;
        for (int64_t j = i; j < pl->ntied; j++)
            if (!strncmp(pl->tied[j], pl->tied[i], (size_t)(eq - pl->tied[i]) + 1)) {
                int64_t o = find(t, strchr(pl->tied[j], '=') + 1);
                if (!iv_push(&t->gmem, o)) goto nomem;
            }
        sort_nodes(t, t->gmem.v + start, t->gmem.n - start, 1);
        if (!iv_push(&t->gmem, -1)) goto nomem;
    }
    return TDM_OK;
nomem:
    st = tdm_errorf(TDM_ERR_NOMEM, "planner: out of memory");
fail:
    tree_free(t);
    return st;
}

/* ---- get_balanced_memory ---------------------------------------------- */

/* The margin added to each GPU's share: 1.25 x max(size of the first module
 * of each no-split class, mean size of the leaf modules). */
static int64_t balance_margin(const tdm_plist_t *pl, const tree_t *t) {
    int64_t buf = 0;
    if (t->ncls) {
        int *seen = calloc((size_t)t->ncls, sizeof *seen);
        int64_t nseen = 0;
        for (int64_t i = 0; seen && i < pl->n && nseen < t->ncls; i++) {
            /* prefixes of the tensor, shortest first: compute_module_sizes' insertion order */
            int64_t chain[64];
            int nc = 0;
            for (int64_t a = t->n[find(t, pl->e[i].name)].parent; a > 0 && nc < 64; a = t->n[a].parent)
                chain[nc++] = a;
            for (int k = nc - 1; k >= 0; k--) {
                const node_t *m = &t->n[chain[k]];
                if (m->nosplit && !seen[m->cls]) {
                    seen[m->cls] = 1;
                    nseen++;
                    if (m->size > buf) buf = m->size;
                }
            }
        }
        free(seen);
    }
    int64_t sum = 0, cnt = 0;
    for (int64_t i = 1; i < t->nn; i++) {
        const node_t *m = &t->n[i];
        if (m->tensor || !m->real) continue;
        int leaf = 1;
        for (int64_t c = 0; c < m->mods.n && leaf; c++) leaf = !t->n[m->mods.v[c]].real;
        if (leaf) { sum += m->size; cnt++; }
    }
    int64_t mean = (int64_t)((double)sum / (double)(cnt ? cnt : 1));
    return (int64_t)(1.25 * (double)(buf > mean ? buf : mean));
}

static int mm_index(const tdm_max_memory_t *mm, int dev) {
    for (int i = 0; i < mm->n; i++)
        if (mm->dev[i] == dev) return i;
    return -1;
}

static tdm_status balance_compat(const tdm_plist_t *pl, const tree_t *t, tdm_max_memory_t *mm,
                                 int low_zero) {
    if (mm_index(mm, TDM_PLACE_DISK) >= 0)
        return tdm_errorf(TDM_ERR_INVALID_ARG,
                          "max memory: accelerate's balanced strategies fail on a 'disk' budget "
                          "(torch.device(\"disk\") raises)");
    int n = 0, ids[TDM_PLACE_MAX_DEVICES];
    for (int i = 0; i < mm->n; i++)
        if (mm->dev[i] >= 0 && mm->bytes[i] > 0) ids[n++] = i;
    if (n == 0) return TDM_OK;
    if (n == 1) low_zero = 0;
    int64_t S = t->n[0].size;
    int64_t per = S / (low_zero ? n - 1 : n) + balance_margin(pl, t);
    int z = mm_index(mm, 0);
    for (int k = 0; k < n - 1; k++) {
        int i = ids[k];
        int64_t v = low_zero && mm->dev[i] == 0 ? mm->bytes[z] : per;
        if (v < mm->bytes[i]) mm->bytes[i] = v;
    }
    if (low_zero) {
        int64_t sum = 0;
        for (int g = 1; g < n; g++) {      /* by position: GPU ids 1..n-1 */
            int i = mm_index(mm, g);
            if (i < 0)
                return tdm_errorf(TDM_ERR_INVALID_ARG,
                                  "max memory: accelerate's balanced_low_0 fails (KeyError: %d) on "
                                  "GPU ids that are not 0..%d",
                                  g, n - 1);
            sum += mm->bytes[i];
        }
        if (z < 0)
            return tdm_errorf(TDM_ERR_INVALID_ARG,
                              "max memory: accelerate's balanced_low_0 fails (KeyError: 0) without GPU 0");
        int64_t mz = S - sum > 0 ? S - sum : 0;
        if (mz < mm->bytes[z]) mm->bytes[z] = mz;
    }
    return TDM_OK;
}

/* tandem's balancing: over the GPUs with a nonzero budget, in id order; the
 * light GPU of balanced_low_0 is the first of them; "disk" takes no part. */
static void balance_fixed(const tdm_plist_t *pl, const tree_t *t, tdm_max_memory_t *mm, int low_zero) {
    int n = 0, ids[TDM_PLACE_MAX_DEVICES];
    for (int i = 0; i < mm->n; i++)
        if (mm->dev[i] >= 0 && mm->bytes[i] > 0) ids[n++] = i;
    if (n == 0) return;
    if (n == 1) low_zero = 0;
    int64_t S = t->n[0].size;
    int64_t per = S / (low_zero ? n - 1 : n) + balance_margin(pl, t);
    for (int k = 0; k < n - 1; k++) {
        if (low_zero && k == 0) continue;
        if (per < mm->bytes[ids[k]]) mm->bytes[ids[k]] = per;
    }
    if (low_zero) {
        int64_t sum = 0;
        for (int k = 1; k < n; k++) sum += mm->bytes[ids[k]];
        int64_t mz = S - sum > 0 ? S - sum : 0;
        if (mz < mm->bytes[ids[0]]) mm->bytes[ids[0]] = mz;
    }
}

/* ---- infer_auto_device_map -------------------------------------------- */

typedef struct {
    int     ndev;
    int     dev[TDM_PLACE_MAX_DEVICES];
    int64_t cap[TDM_PLACE_MAX_DEVICES];     /* -1: unlimited */
    int     main[TDM_PLACE_MAX_DEVICES];    /* keeps room for the largest layer */
} devs_t;

typedef struct {
    tree_t  *t;
    int      compat;
    ivec_t   q;           /* the queue of node ids */
    int64_t  max_size;
    ivec_t   max_names;
    ivec_t   map;         /* placed node ids, in placement order */
    ivec_t   work;        /* scratch */
} plan_t;

static int is_self_or_under(const tree_t *t, int64_t anc, int64_t n) {
    while (n >= 0 && t->n[n].depth > t->n[anc].depth) n = t->n[n].parent;
    return n == anc;
}

/* get_max_layer_size over q's entries (tensors too unless modules_only). */
static int max_layer(plan_t *p, int modules_only) {
    tree_t *t = p->t;
    p->max_size = 0;
    p->max_names.n = 0;
    p->work.n = 0;
    for (int64_t i = p->q.n - 1; i >= 0; i--)   /* a stack: front of the queue on top */
        if (!modules_only || !t->n[p->q.v[i]].tensor)
            if (!iv_push(&p->work, p->q.v[i])) return 0;
    while (p->work.n) {
        int64_t id = p->work.v[--p->work.n];
        const node_t *nd = &t->n[id];
        if (nd->tensor || nd->mods.n == 0 || nd->nosplit) {
            if (nd->size > p->max_size) {
                p->max_size = nd->size;
                p->max_names.n = 0;
                if (!iv_push(&p->max_names, id)) return 0;
            } else if (nd->size == p->max_size && !iv_push(&p->max_names, id)) {
                return 0;
            }
        } else {
            for (int64_t c = nd->mods.n - 1; c >= 0; c--)
                if (!iv_push(&p->work, nd->mods.v[c])) return 0;
        }
    }
    return 1;
}

/* `name + "." in k + "."`: accelerate's test for "k is inside name" is a
 * substring test (so "0" is inside "10.weight"); tandem's is on dot
 * boundaries. */
static int inside(const plan_t *p, const char *name, const char *k) {
    size_t nl = strlen(name), kl = strlen(k);
    if (!p->compat) return kl >= nl && !memcmp(k, name, nl) && (k[nl] == 0 || k[nl] == '.');
    for (size_t i = 0; i + nl <= kl; i++)
        if (!memcmp(k + i, name, nl) && (i + nl == kl || k[i + nl] == '.')) return 1;
    return 0;
}

/* A module's pieces when split: direct parameters, then child modules
 * (accelerate drops the direct buffers here; tandem keeps them, last). */
static int pieces(const plan_t *p, int64_t id, ivec_t *out) {
    const node_t *nd = &p->t->n[id];
    out->n = 0;
    for (int64_t i = 0; i < nd->params.n; i++) if (!iv_push(out, nd->params.v[i])) return 0;
    for (int64_t i = 0; i < nd->mods.n; i++) if (!iv_push(out, nd->mods.v[i])) return 0;
    if (!p->compat)
        for (int64_t i = 0; i < nd->bufs.n; i++) if (!iv_push(out, nd->bufs.v[i])) return 0;
    return 1;
}

static void place(plan_t *p, int64_t id, int dev) {
    if (p->t->n[id].dev == NODEV) iv_push(&p->map, id);
    p->t->n[id].dev = dev;
}

static const char *dev_name(int dev, char *buf, size_t cap) {
    if (dev == TDM_PLACE_CPU) return "cpu";
    if (dev == TDM_PLACE_DISK) return "disk";
    snprintf(buf, cap, "GPU %d", dev);
    return buf;
}

/* Resets every node to unplaced and queues the root's pieces (its direct
 * buffers last in both modes); p->max_size over the whole queue. 0: out of
 * memory. */
static int start_queue(plan_t *p) {
    tree_t *t = p->t;
    for (int64_t i = 0; i < t->nn; i++) t->n[i].dev = NODEV;
    p->map.n = p->q.n = 0;
    if (!pieces(p, 0, &p->q)) return 0;
    if (p->compat) {            /* the root's queue has its direct buffers last, in both modes */
        const node_t *r = &t->n[0];
        for (int64_t i = 0; i < r->bufs.n; i++) if (!iv_push(&p->q, r->bufs.v[i])) return 0;
    }
    return max_layer(p, 0);
}

/* Drops the largest layers that are `id` or under it (it leaves the queue);
 * when none is left, the largest layer of the remaining modules. 0: out of
 * memory. */
static int drop_max_names_under(plan_t *p, int64_t id) {
    int64_t w = 0;
    for (int64_t i = 0; i < p->max_names.n; i++)
        if (!is_self_or_under(p->t, id, p->max_names.v[i])) p->max_names.v[w++] = p->max_names.v[i];
    p->max_names.n = w;
    return w > 0 || max_layer(p, 1);
}

/* tp = the tied parameters outside `name`, of groups with members both
 * inside and outside it. 0: out of memory. */
static int outside_tied(const plan_t *p, const char *name, ivec_t *tp) {
    const tree_t *t = p->t;
    tp->n = 0;
    for (int64_t g = 0; g < t->groups.n; g++) {
        const int64_t *m = t->gmem.v + t->groups.v[g];
        int any = 0, all = 1;
        for (const int64_t *k = m; *k >= 0; k++) {
            int in = inside(p, name, t->n[*k].name);
            any |= in;
            all &= in;
        }
        if (!any || all) continue;
        for (const int64_t *k = m; *k >= 0; k++)
            if (!inside(p, name, t->n[*k].name) && !iv_push(tp, *k)) return 0;
    }
    return 1;
}

/* owners = the queued modules that hold the tied parameters tp (pulled
 * along with `name`); *need = size plus what they add. A tied parameter
 * whose module is placed already adds nothing (accelerate fails there: an
 * error in compat mode). */
static tdm_status tied_owners(const plan_t *p, const char *name, const ivec_t *tp, int64_t size,
                              ivec_t *owners, int64_t *need) {
    const tree_t *t = p->t;
    *need = size;
    owners->n = 0;
    for (int64_t i = 0; i < tp->n; i++) {
        const char *tn = t->n[tp->v[i]].name;
        int64_t o = -1;
        for (int64_t j = 0; j < p->q.n && o < 0; j++) {
            const char *qn = t->n[p->q.v[j]].name;
            size_t l = strlen(qn);
            if (!strncmp(tn, qn, l) && tn[l] == '.') o = p->q.v[j];
        }
        if (o < 0) {
            if (p->compat)
                return tdm_errorf(TDM_ERR_INVALID_ARG,
                                  "planner: accelerate fails (IndexError) on '%s', tied to '%s' "
                                  "whose module is already placed", name, tn);
            continue;          /* its module is placed already: nothing to pull along */
        }
        if (!iv_push(owners, o)) return tdm_errorf(TDM_ERR_NOMEM, "planner: out of memory");
        *need += t->n[o].size - t->n[tp->v[i]].size;
    }
    return TDM_OK;
}

/* The error when every device is full: what each holds, and what is left. */
static tdm_status no_room_error(const plan_t *p, const devs_t *D, const node_t *nd, int64_t size,
                                int64_t need, const int64_t *used, int64_t reserved) {
    const tree_t *t = p->t;
    char msg[2048], b[32];
    int o = 0;
    int64_t left = size;
    for (int64_t j = 0; j < p->q.n; j++) left += t->n[p->q.v[j]].size;
    for (int d = 0; d < D->ndev && o < (int)sizeof msg - 128; d++)
        o += snprintf(msg + o, sizeof msg - (size_t)o, "%s%s: %lld of %lld bytes", d ? "; " : "",
                      dev_name(D->dev[d], b, sizeof b), (long long)used[d], (long long)D->cap[d]);
    /* only a "disk" budget given explicitly ends the device list with a cap */
    return tdm_errorf(TDM_ERR_NOMEM,
                      "max memory too small: '%s' needs %lld bytes and %lld bytes are left to "
                      "place, but no device has room (%s%s); the disk=%lld bytes cap is too "
                      "small: raise it, or leave disk= out for an unlimited disk",
                      nd->name[0] ? nd->name : "(model)", (long long)need, (long long)left,
                      D->ndev ? msg : "no devices", reserved ? ", including the largest-layer reserve" : "",
                      (long long)(D->ndev ? D->cap[D->ndev - 1] : 0));
}

/* Places `id` and the tied modules it pulls along (taken off the queue)
 * on dev. */
static void place_with_owners(plan_t *p, int64_t id, const ivec_t *owners, int dev) {
    place(p, id, dev);
    for (int64_t i = 0; i < owners->n; i++) {
        for (int64_t j = 0; j < p->q.n; j++)
            if (p->q.v[j] == owners->v[i]) { iv_remove(&p->q, j); break; }
        place(p, owners->v[i], dev);
    }
}

/* Replaces the first splittable tied owner in the queue by its pieces and
 * puts `id` back in front. 1: split, 0: none splittable, -1: out of
 * memory. */
static int split_tied_owner(plan_t *p, int64_t id, const ivec_t *owners, ivec_t *kids) {
    for (int64_t i = 0; i < owners->n; i++) {
        const node_t *o = &p->t->n[owners->v[i]];
        if (o->mods.n == 0 || o->nosplit) continue;
        if (!pieces(p, owners->v[i], kids)) return -1;
        int64_t j = 0;
        while (p->q.v[j] != owners->v[i]) j++;
        iv_remove(&p->q, j);
        if (!iv_insert(&p->q, j, kids->v, kids->n) || !iv_insert(&p->q, 0, &id, 1)) return -1;
        if (!max_layer(p, 1)) return -1;
        return 1;
    }
    return 0;
}

/* One greedy pass. reserve: keep max_layer free on the main devices. On
 * success p->map holds the placed nodes (node.dev set). *reserved = the
 * largest reserve applied. */
static tdm_status infer(plan_t *p, const devs_t *D, int reserve, int64_t *reserved) {
    tree_t *t = p->t;
    tdm_status st = TDM_OK;
    ivec_t tp = {0}, owners = {0}, kids = {0};
    int64_t used[TDM_PLACE_MAX_DEVICES] = {0};
    int cur = 0;
    *reserved = 0;
    if (!start_queue(p)) goto nomem;
    while (p->q.n) {
        int64_t id = p->q.v[0];
        iv_remove(&p->q, 0);
        const node_t *nd = &t->n[id];
        if (!drop_max_names_under(p, id)) goto nomem;
        int64_t size = nd->size, need;
        if (!outside_tied(p, nd->name, &tp)) goto nomem;
        TDM_TRY(tied_owners(p, nd->name, &tp, size, &owners, &need));
        if (cur >= D->ndev) {
            st = no_room_error(p, D, nd, size, need, used, *reserved);
            goto fail;
        }
        int64_t cap = D->cap[cur], res = 0;
        if (reserve && D->main[cur]) {
            res = p->max_size;
            if (cap >= 0) cap -= res;
        }
        if (D->cap[cur] < 0 || used[cur] + need <= cap) {
            used[cur] += need;
            place_with_owners(p, id, &owners, D->dev[cur]);
            continue;
        }
        if (tp.n > 0 && used[cur] + size <= cap) {      /* split a tied module instead */
            int split = split_tied_owner(p, id, &owners, &kids);
            if (split < 0) goto nomem;
            if (split) continue;
        }
        if (used[cur] + size >= cap && !nd->tensor && nd->mods.n > 0 && !nd->nosplit) {
            if (!pieces(p, id, &kids) || !iv_insert(&p->q, 0, kids.v, kids.n)) goto nomem;
            if (!max_layer(p, 1)) goto nomem;
            continue;
        }
        used[cur] += res;           /* next device, never revisited */
        if (res > *reserved) *reserved = res;
        cur++;
        if (!iv_insert(&p->q, 0, &id, 1)) goto nomem;
    }
    goto done;
nomem:
    st = tdm_errorf(TDM_ERR_NOMEM, "planner: out of memory");
fail:
done:
    free(tp.v);
    free(owners.v);
    free(kids.v);
    return st;
}

/* ---- clean_device_map ------------------------------------------------- */

/* The ancestor of n one level below `anc` (n itself when it is that deep). */
static int64_t child_toward(const tree_t *t, int64_t anc, int64_t n) {
    while (t->n[n].depth > t->n[anc].depth + 1) n = t->n[n].parent;
    return n;
}

/* Collapses the entries under module m that all share one device into m
 * (when there are two or more), else recurses into m's children. Entries
 * live in p->map (node ids; node.dev = device, NODEV = removed). */
static int clean(plan_t *p, int64_t m) {
    tree_t *t = p->t;
    int64_t cnt = 0;
    int dev = NODEV, same = 1;
    for (int64_t i = 0; i < p->map.n; i++) {
        int64_t e = p->map.v[i];
        if (t->n[e].dev == NODEV || e == m || !is_self_or_under(t, m, e)) continue;
        if (cnt++ == 0) dev = t->n[e].dev;
        else same &= t->n[e].dev == dev;
    }
    if (cnt > 1 && same) {
        for (int64_t i = 0; i < p->map.n; i++) {
            int64_t e = p->map.v[i];
            if (e != m && is_self_or_under(t, m, e)) t->n[e].dev = NODEV;
        }
        if (t->n[m].dev == NODEV && !iv_push(&p->map, m)) return 0;
        t->n[m].dev = dev;
        return 1;
    }
    /* children holding entries; the set is rebuilt because recursion edits the map */
    ivec_t kids = {0};
    for (int64_t i = 0; i < p->map.n; i++) {
        int64_t e = p->map.v[i];
        if (t->n[e].dev == NODEV || e == m || !is_self_or_under(t, m, e)) continue;
        int64_t c = child_toward(t, m, e), k = 0;
        while (k < kids.n && kids.v[k] != c) k++;
        if (k == kids.n && !iv_push(&kids, c)) { free(kids.v); return 0; }
    }
    int ok = 1;
    for (int64_t k = 0; k < kids.n && ok; k++) ok = clean(p, kids.v[k]);
    free(kids.v);
    return ok;
}

/* ---- the plan --------------------------------------------------------- */

static int offloaded(const plan_t *p) {
    for (int64_t i = 0; i < p->map.n; i++) {
        int d = p->t->n[p->map.v[i]].dev;
        if (d == TDM_PLACE_CPU || d == TDM_PLACE_DISK) return 1;
    }
    return 0;
}

tdm_status tdm_place_plan_ex(const tdm_plist_t *pl, const char *const *nosplit_class,
                             const tdm_max_memory_t *mm_in, tdm_place_strategy strategy,
                             unsigned flags, tdm_place_map_t *out) {
    memset(out, 0, sizeof *out);
    if (!pl || !mm_in) return tdm_errorf(TDM_ERR_INVALID_ARG, "planner: no parameter list or budgets");
    int compat = (flags & TDM_PLACE_ACCELERATE_COMPAT) != 0;
    tree_t t;
    plan_t p = {0};
    tdm_status st = tree_build(pl, nosplit_class, &t);
    if (st != TDM_OK) return st;
    p.t = &t;
    p.compat = compat;
    tdm_max_memory_t mm = *mm_in;
    for (int i = 0; i < mm.n; i++)
        if (mm.bytes[i] < 0 || mm.dev[i] < TDM_PLACE_DISK) {
            st = tdm_errorf(TDM_ERR_INVALID_ARG, "planner: bad budget for device %d", mm.dev[i]);
            goto fail;
        }
    if (strategy != TDM_PLACE_SEQUENTIAL) {
        int lz = strategy == TDM_PLACE_BALANCED_LOW_0;
        if (compat) TDM_TRY(balance_compat(pl, &t, &mm, lz));
        else balance_fixed(pl, &t, &mm, lz);
    }
    devs_t D;
    memset(&D, 0, sizeof D);
    for (int i = 0; i < mm.n; i++) {
        if (!compat && mm.dev[i] >= 0 && mm.bytes[i] == 0) continue;   /* no room: not a device */
        D.dev[D.ndev] = mm.dev[i];
        D.cap[D.ndev++] = compat && mm.dev[i] == TDM_PLACE_DISK ? -1 : mm.bytes[i];
    }
    /* as accelerate: without a "disk" budget, an unlimited disk ends the list */
    const int disk_implicit = mm_index(&mm, TDM_PLACE_DISK) < 0;
    if (disk_implicit) {
        D.dev[D.ndev] = TDM_PLACE_DISK;
        D.cap[D.ndev++] = -1;
    }
    for (int d = 0; d < D.ndev; d++)     /* main devices: the first GPU, and cpu */
        D.main[d] = (d == 0 && D.dev[0] >= 0) || D.dev[d] == TDM_PLACE_CPU;
    int64_t reserved = 0;
    if (compat) {
        TDM_TRY(infer(&p, &D, 1, &reserved));
    } else {
        /* without the reserve first; a plan that fails here fails with it too */
        TDM_TRY(infer(&p, &D, 0, &reserved));
        if (offloaded(&p)) TDM_TRY(infer(&p, &D, 1, &reserved));
    }
    if (!clean(&p, 0)) {
        st = tdm_errorf(TDM_ERR_NOMEM, "planner: out of memory");
        goto fail;
    }
    /* the cleaned map, in tree order */
    int64_t n = 0;
    for (int64_t i = 0; i < p.map.n; i++)
        if (t.n[p.map.v[i]].dev != NODEV) p.map.v[n++] = p.map.v[i];
    p.map.n = n;
    sort_nodes(&t, p.map.v, n, 0);
    out->e = calloc((size_t)(n ? n : 1), sizeof *out->e);
    if (!out->e) { st = tdm_errorf(TDM_ERR_NOMEM, "planner: out of memory"); goto fail; }
    for (int64_t i = 0; i < n; i++) {
        out->e[i].name = strdup(t.n[p.map.v[i]].name);
        out->e[i].dev = t.n[p.map.v[i]].dev;
        out->n = i + 1;
        if (!out->e[i].name) { st = tdm_errorf(TDM_ERR_NOMEM, "planner: out of memory"); goto fail; }
    }
    out->ndev = D.ndev;
    for (int d = 0; d < D.ndev; d++) {
        out->dev[d] = D.dev[d];
        out->budget[d] = D.cap[d];
    }
    out->reserve = reserved;
    out->disk_implicit = disk_implicit;
    out->total = t.n[0].size;
    /* bytes per device: each tensor goes where its nearest mapped ancestor goes */
    for (int64_t i = 1; i < t.nn; i++) {
        if (!t.n[i].tensor || t.n[i].size == 0) continue;
        int64_t a = i;
        while (a >= 0 && t.n[a].dev == NODEV) a = t.n[a].parent;
        if (a < 0) continue;          /* not covered (accelerate drops a split module's buffers) */
        for (int d = 0; d < D.ndev; d++)
            if (D.dev[d] == t.n[a].dev) out->used[d] += t.n[i].size;
    }
    free(p.q.v);
    free(p.max_names.v);
    free(p.map.v);
    free(p.work.v);
    tree_free(&t);
    return TDM_OK;
fail:
    free(p.q.v);
    free(p.max_names.v);
    free(p.map.v);
    free(p.work.v);
    tree_free(&t);
    tdm_place_map_free(out);
    return st;
}

tdm_status tdm_place_plan(const tdm_plist_t *pl, const tdm_max_memory_t *mm,
                          tdm_place_strategy strategy, unsigned flags, tdm_place_map_t *out) {
    return tdm_place_plan_ex(pl, (const char *const *)pl->nosplit_class, mm, strategy, flags, out);
}

static void json_str(FILE *f, const char *a, const char *b) {
    fputc('"', f);
    for (int part = 0; part < 2; part++) {
        const char *s = part ? b : a;
        if (!s) continue;
        if (part && a && *a && *s) fputc('.', f);
        for (; *s; s++) {
            unsigned char c = (unsigned char)*s;
            if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
            else if (c < 0x20) fprintf(f, "\\u%04x", c);
            else fputc(c, f);
        }
    }
    fputc('"', f);
}

tdm_status tdm_place_map_json(const tdm_place_map_t *m, const char *prefix, FILE *f) {
    fputc('{', f);
    for (int64_t i = 0; i < m->n; i++) {
        if (i) fputs(", ", f);
        json_str(f, prefix, m->e[i].name);
        fputs(": ", f);
        if (m->e[i].dev >= 0) fprintf(f, "%d", m->e[i].dev);
        else fputs(m->e[i].dev == TDM_PLACE_CPU ? "\"cpu\"" : "\"disk\"", f);
    }
    fputc('}', f);
    if (ferror(f)) return tdm_errorf(TDM_ERR_IO, "device map: write failed");
    return TDM_OK;
}
