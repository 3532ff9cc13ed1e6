/* clip_tokenizer.c — CLIP byte-level BPE tokenizer, matching transformers'
 * CLIPTokenizer (tokenizers backend) as Stable Diffusion pipelines call it.
 *
 * Pipeline per text, as tokenizers runs it:
 *   1. split out special tokens that are matched on the raw text
 *      ("normalized": false), leftmost-longest;
 *   2. normalize the rest: NFC, then per-character lower-casing;
 *   3. split out special tokens matched on the normalized text;
 *   4. pre-tokenize with CLIP's pattern
 *        <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|
 *        [\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
 *      (whitespace is dropped), then ByteLevel's GPT-2 split, which only
 *      changes the two special-token-looking pieces ("<|", name, "|>");
 *   5. BPE each word over its bytes (mapped to GPT-2's printable symbols,
 *      "</w>" on the last one): repeatedly merge the adjacent pair of lowest
 *      merge rank, leftmost first;
 *   6. BOS + ids truncated to L-2 + EOS, padded to L with the pad id.
 * BPE runs over a linked list of symbols with a heap of candidate merges,
 * O(n log n) in the word length, and stops at the first word that finds the
 * L-2 token budget full: later words cannot change the ids kept.
 * Unicode classes, lower-casing and NFC data come from clip_unicode_tables.h.
 * The vocabulary and merges come from vocab.json + merges.txt or, when those
 * are absent (folders saved by transformers 5), from tokenizer.json's BPE
 * model; steps 1-6 are CLIPTokenizer's own whichever file they come from.
 * This is not a general tokenizer.json interpreter. */
#include "text/clip_tokenizer.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/config.h"
#include "io/folder.h"
#include "text/clip_unicode_tables.h"

#define CLIP_DEFAULT_MAX_LENGTH 77
#define CLIP_MAX_FILE_BYTES ((int64_t)1 << 30)

typedef struct {
    int64_t off;     /* into pool */
    int32_t len;
    int32_t id;
} clip_vent_t;

typedef struct {
    uint64_t key;    /* (left id << 32) | right id; UINT64_MAX = empty */
    int32_t  rank;
    int32_t  id;     /* id of the merged token */
} clip_ment_t;

typedef struct {
    uint32_t *cps;   /* content as code points */
    int64_t   n;
    int32_t   id;
    int       normalized;  /* matched on normalized text */
} clip_added_t;

struct tdm_clip_tok {
    char        *pool;      /* vocab strings */
    int64_t      pool_len;
    clip_vent_t *vent;      /* vocab entries */
    int64_t      nvocab;
    int64_t     *vslot;     /* hash slots -> vent index, -1 empty */
    int64_t      vcap;      /* power of two */
    clip_ment_t *mslot;     /* merge hash slots */
    int64_t      mcap;
    int64_t      nmerges;
    int64_t      next_rank;         /* rank of the next merge loaded */
    int32_t      byte_id[256];      /* GPT-2 symbol of a byte, -1 if absent */
    int32_t      byte_eow_id[256];  /* same + "</w>" */
    int32_t      unk_id;            /* -1 if the unk token is not in the vocab */
    clip_added_t *added;
    int          nadded;
    int32_t      bos_id, eos_id, pad_id;
    int          max_length;
    int64_t      vocab_size;        /* vocab.json entries + added tokens outside it */
    int32_t      next_added_id;
};

/* ---- small helpers ----------------------------------------------------- */

static uint64_t clip_hash(const void *p, int64_t n) { return tdm_fnv(p, (size_t)n); }

static uint64_t clip_mix(uint64_t x) {
    x ^= x >> 33; x *= 0xff51afd7ed558ccdull; x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull; x ^= x >> 33;
    return x;
}


/* ---- UTF-8 ------------------------------------------------------------- */

/* Decodes strict UTF-8 (no overlongs, surrogates or values > U+10FFFF).
 * Returns the byte offset of the first invalid sequence, or -1 if valid. */
static int64_t clip_utf8_decode(const unsigned char *s, int64_t n, uint32_t *cps, int64_t *ncp) {
    int64_t i = 0, k = 0;
    while (i < n) {
        uint32_t c = s[i];
        int len;
        uint32_t min;
        if (c < 0x80) { cps[k++] = c; i++; continue; }
        else if ((c & 0xE0) == 0xC0) { len = 2; c &= 0x1F; min = 0x80; }
        else if ((c & 0xF0) == 0xE0) { len = 3; c &= 0x0F; min = 0x800; }
        else if ((c & 0xF8) == 0xF0) { len = 4; c &= 0x07; min = 0x10000; }
        else return i;
        if (i + len > n) return i;
        for (int j = 1; j < len; j++) {
            if ((s[i + j] & 0xC0) != 0x80) return i;
            c = (c << 6) | (s[i + j] & 0x3F);
        }
        if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return i;
        cps[k++] = c;
        i += len;
    }
    *ncp = k;
    return -1;
}

static int clip_utf8_put(uint32_t c, unsigned char *o) {
    if (c < 0x80) { o[0] = (unsigned char)c; return 1; }
    if (c < 0x800) { o[0] = (unsigned char)(0xC0 | (c >> 6)); o[1] = (unsigned char)(0x80 | (c & 0x3F)); return 2; }
    if (c < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (c >> 12)); o[1] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (c & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (c >> 18)); o[1] = (unsigned char)(0x80 | ((c >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((c >> 6) & 0x3F)); o[3] = (unsigned char)(0x80 | (c & 0x3F));
    return 4;
}

/* ---- Unicode data ------------------------------------------------------ */

enum { CLIP_OTHER = 0, CLIP_SPACE = 1, CLIP_LETTER = 2, CLIP_NUMBER = 3 };

static int clip_class(uint32_t c) {
    int64_t lo = 0, hi = (int64_t)(sizeof clip_uni_class / sizeof clip_uni_class[0]) - 1;
    while (lo <= hi) {
        int64_t mid = (lo + hi) / 2;
        if (c < clip_uni_class[mid][0]) hi = mid - 1;
        else if (c > clip_uni_class[mid][1]) lo = mid + 1;
        else return (int)clip_uni_class[mid][2];
    }
    return CLIP_OTHER;
}

static int clip_ccc(uint32_t c) {
    if (c < 0x300) return 0;
    int64_t lo = 0, hi = (int64_t)(sizeof clip_uni_ccc / sizeof clip_uni_ccc[0]) - 1;
    while (lo <= hi) {
        int64_t mid = (lo + hi) / 2;
        if (c < clip_uni_ccc[mid][0]) hi = mid - 1;
        else if (c > clip_uni_ccc[mid][1]) lo = mid + 1;
        else return (int)clip_uni_ccc[mid][2];
    }
    return 0;
}

/* Index of row with first column c in a sorted table, or -1. */
#define CLIP_FIND(tab, c, res)                                                 \
    do {                                                                       \
        int64_t lo_ = 0, hi_ = (int64_t)(sizeof tab / sizeof tab[0]) - 1;      \
        (res) = -1;                                                            \
        while (lo_ <= hi_) {                                                   \
            int64_t mid_ = (lo_ + hi_) / 2;                                    \
            if ((c) < tab[mid_][0]) hi_ = mid_ - 1;                            \
            else if ((c) > tab[mid_][0]) lo_ = mid_ + 1;                       \
            else { (res) = mid_; break; }                                      \
        }                                                                      \
    } while (0)

enum { H_SBASE = 0xAC00, H_LBASE = 0x1100, H_VBASE = 0x1161, H_TBASE = 0x11A7,
       H_LCOUNT = 19, H_VCOUNT = 21, H_TCOUNT = 28, H_NCOUNT = 588, H_SCOUNT = 11172 };

/* Full canonical decomposition of c into o (at most 4 code points). */
static int clip_decompose(uint32_t c, uint32_t *o) {
    if (c < 0xC0) { o[0] = c; return 1; }
    if (c >= H_SBASE && c < H_SBASE + H_SCOUNT) {
        uint32_t s = c - H_SBASE;
        o[0] = H_LBASE + s / H_NCOUNT;
        o[1] = H_VBASE + (s % H_NCOUNT) / H_TCOUNT;
        if (s % H_TCOUNT == 0) return 2;
        o[2] = H_TBASE + s % H_TCOUNT;
        return 3;
    }
    int64_t r;
    CLIP_FIND(clip_uni_decomp, c, r);
    if (r < 0) { o[0] = c; return 1; }
    int n = 0;
    for (int j = 1; j <= 4 && clip_uni_decomp[r][j]; j++) o[n++] = clip_uni_decomp[r][j];
    return n;
}

/* Primary composite of (a, b), or 0. */
static uint32_t clip_compose(uint32_t a, uint32_t b) {
    if (a >= H_LBASE && a < H_LBASE + H_LCOUNT && b >= H_VBASE && b < H_VBASE + H_VCOUNT)
        return H_SBASE + ((a - H_LBASE) * H_VCOUNT + (b - H_VBASE)) * H_TCOUNT;
    if (a >= H_SBASE && a < H_SBASE + H_SCOUNT && (a - H_SBASE) % H_TCOUNT == 0 &&
        b > H_TBASE && b < H_TBASE + H_TCOUNT)
        return a + (b - H_TBASE);
    int64_t lo = 0, hi = (int64_t)(sizeof clip_uni_comp / sizeof clip_uni_comp[0]) - 1;
    while (lo <= hi) {
        int64_t mid = (lo + hi) / 2;
        const uint32_t *r = clip_uni_comp[mid];
        if (a < r[0] || (a == r[0] && b < r[1])) hi = mid - 1;
        else if (a > r[0] || b > r[1]) lo = mid + 1;
        else return r[2];
    }
    return 0;
}

/* Stable sort of the non-starters out[a..b) by canonical combining class:
 * insertion for short runs, counting sort (classes are < 256) through
 * `tmp` (room for b - a) for long ones, so a run of a million marks costs
 * linear time. */
static void clip_sort_marks(uint32_t *out, int64_t a, int64_t b, uint32_t *tmp) {
    if (b - a <= 16) {
        for (int64_t i = a + 1; i < b; i++) {
            uint32_t c = out[i];
            int cc = clip_ccc(c);
            int64_t j = i;
            while (j > a && clip_ccc(out[j - 1]) > cc) { out[j] = out[j - 1]; j--; }
            out[j] = c;
        }
        return;
    }
    int64_t at[257] = {0};
    for (int64_t i = a; i < b; i++) at[clip_ccc(out[i]) + 1]++;
    for (int k = 1; k <= 256; k++) at[k] += at[k - 1];
    for (int64_t i = a; i < b; i++) tmp[at[clip_ccc(out[i])]++] = out[i];
    memcpy(out + a, tmp, (size_t)(b - a) * sizeof *out);
}

/* NFC of in[0..n) into out (room for 4n), with `tmp` (room for 4n) as
 * scratch; returns the output length. */
static int64_t clip_nfc(const uint32_t *in, int64_t n, uint32_t *out, uint32_t *tmp) {
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++) m += clip_decompose(in[i], out + m);
    /* canonical ordering: stable sort of each run of non-starters */
    for (int64_t i = 0; i < m;) {
        if (clip_ccc(out[i]) == 0) { i++; continue; }
        int64_t j = i + 1;
        while (j < m && clip_ccc(out[j]) != 0) j++;
        clip_sort_marks(out, i, j, tmp);
        i = j;
    }
    if (m == 0) return 0;
    /* canonical composition */
    int64_t starter = 0, w = 1;
    int last = clip_ccc(out[0]) ? 256 : 0;
    for (int64_t i = 1; i < m; i++) {
        uint32_t c = out[i];
        int cc = clip_ccc(c);
        uint32_t comp = clip_compose(out[starter], c);
        if (comp && (last < cc || last == 0)) {
            out[starter] = comp;
            continue;
        }
        if (cc == 0) starter = w;
        last = cc;
        out[w++] = c;
    }
    return w;
}

/* Per-character lower-casing of in[0..n) into out (room for 2n). */
static int64_t clip_lower(const uint32_t *in, int64_t n, uint32_t *out) {
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++) {
        uint32_t c = in[i];
        if (c < 0x80) { out[m++] = (c >= 'A' && c <= 'Z') ? c + 32 : c; continue; }
        int64_t r;
        CLIP_FIND(clip_uni_lower, c, r);
        if (r < 0) { out[m++] = c; continue; }
        out[m++] = clip_uni_lower[r][1];
        if (clip_uni_lower[r][2]) out[m++] = clip_uni_lower[r][2];
    }
    return m;
}

/* ---- vocabulary and merges -------------------------------------------- */

static int32_t clip_vocab_get(const tdm_clip_tok_t *t, const char *s, int64_t n) {
    uint64_t h = clip_hash(s, n);
    for (int64_t i = (int64_t)(h & (uint64_t)(t->vcap - 1));; i = (i + 1) & (t->vcap - 1)) {
        int64_t e = t->vslot[i];
        if (e < 0) return -1;
        const clip_vent_t *v = &t->vent[e];
        if (v->len == n && memcmp(t->pool + v->off, s, (size_t)n) == 0) return v->id;
    }
}

static int clip_merge_get(const tdm_clip_tok_t *t, int32_t a, int32_t b, int32_t *rank,
                          int32_t *id) {
    if (t->mcap == 0 || a < 0 || b < 0) return 0;
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    for (int64_t i = (int64_t)(clip_mix(key) & (uint64_t)(t->mcap - 1));; i = (i + 1) & (t->mcap - 1)) {
        const clip_ment_t *m = &t->mslot[i];
        if (m->key == UINT64_MAX) return 0;
        if (m->key == key) { *rank = m->rank; *id = m->id; return 1; }
    }
}

static int64_t clip_pow2_at_least(int64_t n) {
    int64_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

/* The ids of the n vocabulary entries must be 0..n-1, each once (a dense
 * {token: id} map, as every CLIP vocabulary is): an id past the end or a
 * shared one would make an id that is no row of the embedding, or two
 * tokens that decode alike. */
static tdm_status clip_vocab_check_ids(const tdm_clip_tok_t *t, const char *path, const char *where) {
    int64_t n = t->nvocab;
    int64_t *owner = malloc((size_t)n * sizeof *owner);
    if (!owner) return tdm_errorf(TDM_ERR_NOMEM, "%s: out of memory", path);
    for (int64_t i = 0; i < n; i++) owner[i] = -1;
    tdm_status st = TDM_OK;
    for (int64_t e = 0; e < n; e++) {
        const clip_vent_t *v = &t->vent[e];
        int vl = v->len > 40 ? 40 : (int)v->len;
        if (v->id >= n) {
            st = tdm_errorf(TDM_ERR_FORMAT, "%s: %stoken \"%.*s\" has id %ld, outside [0, %lld] (%lld tokens)",
                            path, where, vl, t->pool + v->off, (long)v->id, (long long)(n - 1), (long long)n);
            break;
        }
        if (owner[v->id] >= 0) {
            const clip_vent_t *o = &t->vent[owner[v->id]];
            int ol = o->len > 40 ? 40 : (int)o->len;
            st = tdm_errorf(TDM_ERR_FORMAT, "%s: %stoken \"%.*s\" has id %ld, already the id of token \"%.*s\"", path,
                            where, vl, t->pool + v->off, (long)v->id, ol, t->pool + o->off);
            break;
        }
        owner[v->id] = e;
    }
    free(owner);
    return st;
}

/* Builds the vocabulary from a {token: id} JSON object (vocab.json's root
 * or tokenizer.json's model.vocab); `where` prefixes error messages after
 * the path ("" or "model.vocab: "). */
static tdm_status clip_vocab_build(tdm_clip_tok_t *t, const cJSON *root, const char *path,
                                   const char *where) {
    tdm_status st = TDM_OK;
    int64_t n = 0, bytes = 0;
    for (cJSON *e = root->child; e; e = e->next) {
        if (!cJSON_IsNumber(e)) continue;  /* tokenizers skips non-numbers */
        n++;
        bytes += (int64_t)strlen(e->string);
    }
    if (n == 0) return tdm_errorf(TDM_ERR_FORMAT, "%s: %sno tokens", path, where);
    t->vcap = clip_pow2_at_least(2 * n);
    t->vent = malloc((size_t)n * sizeof *t->vent);
    t->vslot = malloc((size_t)t->vcap * sizeof *t->vslot);
    t->pool = malloc((size_t)bytes + 1);
    if (!t->vent || !t->vslot || !t->pool) {
        st = tdm_errorf(TDM_ERR_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    for (int64_t i = 0; i < t->vcap; i++) t->vslot[i] = -1;
    for (cJSON *e = root->child; e; e = e->next) {
        if (!cJSON_IsNumber(e)) continue;
        double d = e->valuedouble;
        if (!(d >= 0 && d <= INT32_MAX) || d != (double)(int64_t)d) {
            st = tdm_errorf(TDM_ERR_FORMAT, "%s: %stoken \"%.40s\" has id %g (want an integer in [0, %d])",
                            path, where, e->string, d, INT32_MAX);
            goto fail;
        }
        int64_t len = (int64_t)strlen(e->string);
        if (len > INT32_MAX / 2) { st = tdm_errorf(TDM_ERR_FORMAT, "%s: %stoken too long", path, where); goto fail; }
        int32_t id = (int32_t)d;
        /* a duplicated key keeps its last id, as a JSON map load does */
        uint64_t h = clip_hash(e->string, len);
        int64_t i = (int64_t)(h & (uint64_t)(t->vcap - 1));
        for (;; i = (i + 1) & (t->vcap - 1)) {
            int64_t s = t->vslot[i];
            if (s < 0) break;
            if (t->vent[s].len == len && memcmp(t->pool + t->vent[s].off, e->string, (size_t)len) == 0) break;
        }
        if (t->vslot[i] >= 0) { t->vent[t->vslot[i]].id = id; continue; }
        clip_vent_t *v = &t->vent[t->nvocab];
        v->off = t->pool_len;
        v->len = (int32_t)len;
        v->id = id;
        memcpy(t->pool + t->pool_len, e->string, (size_t)len);
        t->pool_len += len;
        t->vslot[i] = t->nvocab++;
    }
    TDM_TRY(clip_vocab_check_ids(t, path, where));
    t->vocab_size = t->nvocab;
    t->next_added_id = (int32_t)t->nvocab;
fail:
    return st;
}

static tdm_status clip_load_vocab(tdm_clip_tok_t *t, const char *path) {
    cJSON *root = NULL;
    tdm_status st = tdm_json_load_tree(path, 0, &root);
    if (st != TDM_OK) return st;
    st = clip_vocab_build(t, root, path, "");
    cJSON_Delete(root);
    return st;
}

/* Sizes the merge table for up to n merges. */
static tdm_status clip_merges_alloc(tdm_clip_tok_t *t, int64_t n, const char *path) {
    if (n > INT32_MAX) return tdm_errorf(TDM_ERR_FORMAT, "%s: too many merges", path);
    t->mcap = clip_pow2_at_least(2 * n);
    t->mslot = malloc((size_t)t->mcap * sizeof *t->mslot);
    if (!t->mslot) return tdm_errorf(TDM_ERR_NOMEM, "%s: out of memory", path);
    for (int64_t i = 0; i < t->mcap; i++) t->mslot[i].key = UINT64_MAX;
    return TDM_OK;
}

/* Adds merge (a, b) with the next rank. Both parts and their concatenation
 * must be tokens; `tok` has room for na + nb bytes. Errors name the merge as
 * "line <k>" of merges.txt (json = 0) or "model.merges[<k>]" (json = 1). */
static tdm_status clip_merge_add(tdm_clip_tok_t *t, const char *a_s, int64_t na, const char *b_s,
                                 int64_t nb, char *tok, const char *path, int json, int64_t k) {
    int32_t a = clip_vocab_get(t, a_s, na), b = clip_vocab_get(t, b_s, nb);
    memcpy(tok, a_s, (size_t)na);
    memcpy(tok + na, b_s, (size_t)nb);
    int32_t m = clip_vocab_get(t, tok, na + nb);
    if (a < 0 || b < 0 || m < 0) {
        const char *miss = a < 0 ? a_s : b < 0 ? b_s : tok;
        int64_t ml = a < 0 ? na : b < 0 ? nb : na + nb;
        int mlen = (int)(ml > 60 ? 60 : ml);
        if (json)
            return tdm_errorf(TDM_ERR_FORMAT, "%s: model.merges[%lld]: token \"%.*s\" is not in model.vocab",
                              path, (long long)k, mlen, miss);
        return tdm_errorf(TDM_ERR_FORMAT, "%s: line %lld: token \"%.*s\" is not in vocab.json", path,
                          (long long)k, mlen, miss);
    }
    int64_t rank = t->next_rank;
    if (rank >= INT32_MAX) return tdm_errorf(TDM_ERR_FORMAT, "%s: too many merges", path);
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    int64_t i = (int64_t)(clip_mix(key) & (uint64_t)(t->mcap - 1));
    while (t->mslot[i].key != UINT64_MAX && t->mslot[i].key != key) i = (i + 1) & (t->mcap - 1);
    if (t->mslot[i].key == UINT64_MAX) t->nmerges++;
    t->mslot[i].key = key;   /* a repeated pair keeps its last rank, as tokenizers does */
    t->mslot[i].rank = (int32_t)rank;
    t->mslot[i].id = m;
    t->next_rank = rank + 1;
    return TDM_OK;
}

static tdm_status clip_load_merges(tdm_clip_tok_t *t, const char *path) {
    char *text = NULL, *tok = NULL;
    int64_t len = 0;
    tdm_status st = tdm_file_read(path, CLIP_MAX_FILE_BYTES, &text, &len);
    if (st != TDM_OK) return st;
    int64_t lines = 1;
    for (int64_t i = 0; i < len; i++) lines += text[i] == '\n';
    TDM_TRY(clip_merges_alloc(t, lines, path));
    tok = malloc((size_t)len + 1);
    if (!tok) { st = tdm_errorf(TDM_ERR_NOMEM, "%s: out of memory", path); goto fail; }
    int64_t p = 0, lineno = 0;
    while (p < len) {
        int64_t e = p;
        while (e < len && text[e] != '\n') e++;
        int64_t next = e + 1;
        lineno++;
        if (e > p && text[e - 1] == '\r') e--;
        const char *line = text + p;
        int64_t n = e - p;
        p = next;
        if (n >= 8 && memcmp(line, "#version", 8) == 0) continue;
        const char *sp = memchr(line, ' ', (size_t)n);
        if (!sp || memchr(sp + 1, ' ', (size_t)(line + n - sp - 1))) {
            st = tdm_errorf(TDM_ERR_FORMAT, "%s: line %lld: expected two tokens separated by one space",
                            path, (long long)lineno);
            goto fail;
        }
        int64_t na = sp - line;
        TDM_TRY(clip_merge_add(t, line, na, sp + 1, n - na - 1, tok, path, 0, lineno));
    }
fail:
    free(tok);
    free(text);
    return st;
}

/* Loads the model of a parsed tokenizer.json: model.vocab ({token: id})
 * and model.merges (["a b", ...] or [["a", "b"], ...]). CLIPTokenizer
 * rebuilds its BPE from just these two (with "</w>" as end-of-word suffix
 * and the unk token of the config) and sets its own normalizer,
 * pre-tokenizer and post-processor, so the file's other fields do not
 * change the encoding and are not read. */
static tdm_status clip_load_json_model(tdm_clip_tok_t *t, const cJSON *root, const char *path) {
    tdm_status st = TDM_OK;
    char *tok = NULL;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(model)) return tdm_errorf(TDM_ERR_FORMAT, "%s: no \"model\" object", path);
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(model, "type");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (type && !cJSON_IsNull(type)) {
        if (!cJSON_IsString(type)) return tdm_errorf(TDM_ERR_FORMAT, "%s: model.type must be a string", path);
        if (strcmp(type->valuestring, "BPE") != 0)
            return tdm_errorf(TDM_ERR_UNSUPPORTED, "%s: model type \"%.40s\" is not supported (CLIP needs \"BPE\")",
                              path, type->valuestring);
    } else if (!cJSON_IsArray(merges)) {  /* old files omit the type; a BPE model has merges */
        return tdm_errorf(TDM_ERR_UNSUPPORTED, "%s: the model has no type and no merges (CLIP needs \"BPE\")", path);
    }
    if (!cJSON_IsObject(vocab))
        return tdm_errorf(TDM_ERR_FORMAT, "%s: model.vocab must be an object {token: id}", path);
    if (!cJSON_IsArray(merges)) return tdm_errorf(TDM_ERR_FORMAT, "%s: model.merges must be an array", path);
    TDM_TRY(clip_vocab_build(t, vocab, path, "model.vocab: "));
    int64_t n = 0, maxlen = 0;
    for (const cJSON *m = merges->child; m; m = m->next, n++) {
        int64_t l;
        if (cJSON_IsString(m)) {
            l = (int64_t)strlen(m->valuestring);
        } else if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 && cJSON_IsString(m->child) &&
                   cJSON_IsString(m->child->next)) {
            l = (int64_t)strlen(m->child->valuestring) + (int64_t)strlen(m->child->next->valuestring);
        } else {
            st = tdm_errorf(TDM_ERR_FORMAT, "%s: model.merges[%lld]: expected \"a b\" or [\"a\", \"b\"]", path,
                            (long long)n);
            goto fail;
        }
        if (l > maxlen) maxlen = l;
    }
    TDM_TRY(clip_merges_alloc(t, n, path));
    tok = malloc((size_t)maxlen + 1);
    if (!tok) { st = tdm_errorf(TDM_ERR_NOMEM, "%s: out of memory", path); goto fail; }
    int64_t k = 0;
    for (const cJSON *m = merges->child; m; m = m->next, k++) {
        if (cJSON_IsString(m)) {
            const char *line = m->valuestring;
            int64_t len = (int64_t)strlen(line);
            const char *sp = memchr(line, ' ', (size_t)len);
            if (!sp || memchr(sp + 1, ' ', (size_t)(line + len - sp - 1))) {
                st = tdm_errorf(TDM_ERR_FORMAT, "%s: model.merges[%lld]: expected two tokens separated by one space",
                                path, (long long)k);
                goto fail;
            }
            int64_t na = sp - line;
            TDM_TRY(clip_merge_add(t, line, na, sp + 1, len - na - 1, tok, path, 1, k));
        } else {
            const char *a = m->child->valuestring, *b = m->child->next->valuestring;
            TDM_TRY(clip_merge_add(t, a, (int64_t)strlen(a), b, (int64_t)strlen(b), tok, path, 1, k));
        }
    }
fail:
    free(tok);
    return st;
}

/* GPT-2's byte -> printable code point map. */
static uint32_t clip_byte_symbol(int b) {
    if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) return (uint32_t)b;
    int n = 0;
    for (int x = 0; x < b; x++)
        if (!((x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE && x <= 0xFF))) n++;
    return 256u + (uint32_t)n;
}

/* ---- special tokens ------------------------------------------------------ */

/* Adds (or, same content, replaces) an added token; sets *id. */
static tdm_status clip_add_token(tdm_clip_tok_t *t, const char *content, int normalized,
                                 int32_t fixed_id, int32_t *id, const char *path) {
    int64_t blen = (int64_t)strlen(content);
    uint32_t *cps = NULL;
    int64_t n = 0;
    if (blen == 0) return tdm_errorf(TDM_ERR_FORMAT, "%s: empty special token", path);
    cps = malloc((size_t)blen * sizeof *cps);
    if (!cps) return tdm_errorf(TDM_ERR_NOMEM, "%s: out of memory", path);
    int64_t bad = clip_utf8_decode((const unsigned char *)content, blen, cps, &n);
    if (bad >= 0) {
        free(cps);
        return tdm_errorf(TDM_ERR_FORMAT, "%s: special token is not valid UTF-8", path);
    }
    int32_t vid = clip_vocab_get(t, content, blen);
    for (int i = 0; i < t->nadded; i++) {
        clip_added_t *a = &t->added[i];
        if (a->n == n && memcmp(a->cps, cps, (size_t)n * sizeof *cps) == 0) {
            free(cps);
            a->normalized = normalized;
            *id = a->id;
            return TDM_OK;
        }
    }
    clip_added_t *grown = realloc(t->added, (size_t)(t->nadded + 1) * sizeof *grown);
    if (!grown) { free(cps); return tdm_errorf(TDM_ERR_NOMEM, "%s: out of memory", path); }
    t->added = grown;
    if (vid < 0 && fixed_id >= 0) {
        /* a token outside the vocabulary needs an id of its own */
        const char *other = NULL;
        int olen = 0;
        for (int64_t e = 0; e < t->nvocab && !other; e++)
            if (t->vent[e].id == fixed_id) { other = t->pool + t->vent[e].off; olen = t->vent[e].len; }
        if (other) {
            free(cps);
            return tdm_errorf(TDM_ERR_FORMAT, "%s: added token \"%.40s\" has id %ld, which the vocabulary gives "
                              "to \"%.*s\"", path, content, (long)fixed_id, olen > 40 ? 40 : olen, other);
        }
        for (int i = 0; i < t->nadded; i++)
            if (t->added[i].id == fixed_id) {
                free(cps);
                return tdm_errorf(TDM_ERR_FORMAT, "%s: added token \"%.40s\" has id %ld, already the id of "
                                  "another added token", path, content, (long)fixed_id);
            }
    }
    if (vid < 0) {
        vid = fixed_id >= 0 ? fixed_id : t->next_added_id;
        if (vid >= t->next_added_id) {
            if (vid == INT32_MAX) { free(cps); return tdm_errorf(TDM_ERR_FORMAT, "%s: token id overflow", path); }
            t->next_added_id = vid + 1;
        }
        t->vocab_size++;
    }
    t->added[t->nadded++] = (clip_added_t){cps, n, vid, normalized};
    *id = vid;
    return TDM_OK;
}

/* If `content` is one of the added tokens in `known` (NULL: none), sets
 * *normalized from that entry; the last entry with this content wins, as in
 * a dict. */
static void clip_known_flags(const cJSON *known, const char *content, int *normalized) {
    if (!known) return;
    for (const cJSON *e = known->child; e; e = e->next) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "content");
        if (cJSON_IsString(c) && strcmp(c->valuestring, content) == 0) {
            const cJSON *nm = cJSON_GetObjectItemCaseSensitive(e, "normalized");
            const cJSON *sp = cJSON_GetObjectItemCaseSensitive(e, "special");
            int special = cJSON_IsBool(sp) ? cJSON_IsTrue(sp) : 0;
            *normalized = cJSON_IsBool(nm) ? cJSON_IsTrue(nm) : !special;
        }
    }
}

/* Content and "normalized" flag of a special-token value: a string, or an
 * AddedToken object {"content": ..., "normalized": ..., "special": ...}.
 * `special_default` is how transformers treats an object without "special"
 * (true from special_tokens_map.json, false from tokenizer_config.json).
 * `known` (NULL: none) lists the added tokens (added_tokens_decoder, or
 * tokenizer.json's added_tokens); a value whose content is one of them takes
 * that token's flags, as transformers swaps in the added token. */
static tdm_status clip_token_value(const cJSON *v, int special_default, const cJSON *known,
                                   const char **content, int *normalized, const char *path,
                                   const char *key) {
    if (cJSON_IsString(v)) {
        *content = v->valuestring;
        *normalized = 0;
    } else if (cJSON_IsObject(v)) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(v, "content");
        if (!cJSON_IsString(c))
            return tdm_errorf(TDM_ERR_FORMAT, "%s: \"%s\" has no string \"content\"", path, key);
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(v, "normalized");
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(v, "special");
        int special = cJSON_IsBool(sp) ? cJSON_IsTrue(sp) : special_default;
        *content = c->valuestring;
        *normalized = cJSON_IsBool(nm) ? cJSON_IsTrue(nm) : !special;
    } else {
        return tdm_errorf(TDM_ERR_FORMAT, "%s: \"%s\" must be a string or an object", path, key);
    }
    clip_known_flags(known, *content, normalized);
    return TDM_OK;
}

/* Special and added tokens from tokenizer_config.json, special_tokens_map.json
 * and, when the config has no added_tokens_decoder, the "added_tokens" of
 * tokenizer.json (`tj`, parsed from `jpath`; NULL if absent), as
 * transformers' from_pretrained resolves them. */
static tdm_status clip_load_specials(tdm_clip_tok_t *t, const char *dir, const cJSON *tj,
                                     const char *jpath) {
    static const char *keys[4] = {"bos_token", "eos_token", "unk_token", "pad_token"};
    static const char *defaults[4] = {"<|startoftext|>", "<|endoftext|>", "<|endoftext|>",
                                      "<|endoftext|>"};
    char cpath[4096], spath[4096];
    cJSON *cfg = NULL, *stm = NULL;
    tdm_status st = TDM_OK;
    snprintf(cpath, sizeof cpath, "%s/tokenizer_config.json", dir);
    snprintf(spath, sizeof spath, "%s/special_tokens_map.json", dir);
    TDM_TRY(tdm_json_load_tree(cpath, 1, &cfg));
    const cJSON *atd = cfg ? cJSON_GetObjectItemCaseSensitive(cfg, "added_tokens_decoder") : NULL;
    if (atd && !cJSON_IsObject(atd)) atd = NULL;
    /* special_tokens_map.json is read only when the config has no added_tokens_decoder */
    if (!atd) TDM_TRY(tdm_json_load_tree(spath, 1, &stm));
    const cJSON *jadded = NULL;  /* tokenizer.json's added tokens, in the same case */
    if (!atd && tj) {
        jadded = cJSON_GetObjectItemCaseSensitive(tj, "added_tokens");
        if (jadded && cJSON_IsNull(jadded)) jadded = NULL;
        if (jadded && !cJSON_IsArray(jadded)) {
            st = tdm_errorf(TDM_ERR_FORMAT, "%s: \"added_tokens\" must be an array", jpath);
            goto fail;
        }
    }

    t->max_length = CLIP_DEFAULT_MAX_LENGTH;
    const cJSON *ml = cfg ? cJSON_GetObjectItemCaseSensitive(cfg, "model_max_length") : NULL;
    if (ml && !cJSON_IsNull(ml)) {
        if (!cJSON_IsNumber(ml) || !(ml->valuedouble >= 2)) {
            st = tdm_errorf(TDM_ERR_FORMAT, "%s: \"model_max_length\" must be a number >= 2", cpath);
            goto fail;
        }
        /* "no limit" sentinels (int(1e30)) keep CLIP's 77 positions */
        if (ml->valuedouble <= (1 << 20)) t->max_length = (int)ml->valuedouble;
    }

    if (atd) {
        for (const cJSON *e = atd->child; e; e = e->next) {
            const char *content;
            int normalized;
            char *endp;
            long id = strtol(e->string, &endp, 10);
            if (*endp || id < 0 || id > INT32_MAX) {
                st = tdm_errorf(TDM_ERR_FORMAT, "%s: added_tokens_decoder key \"%.20s\" is not an id",
                                cpath, e->string);
                goto fail;
            }
            TDM_TRY(clip_token_value(e, 0, NULL, &content, &normalized, cpath, "added_tokens_decoder"));
            int32_t got;
            TDM_TRY(clip_add_token(t, content, normalized, (int32_t)id, &got, cpath));
        }
    }
    if (jadded) {
        int64_t k = 0;
        for (const cJSON *e = jadded->child; e; e = e->next, k++) {
            if (!cJSON_IsObject(e)) {
                st = tdm_errorf(TDM_ERR_FORMAT, "%s: added_tokens[%lld] must be an object", jpath, (long long)k);
                goto fail;
            }
            const cJSON *idv = cJSON_GetObjectItemCaseSensitive(e, "id");
            if (!cJSON_IsNumber(idv) || !(idv->valuedouble >= 0 && idv->valuedouble <= INT32_MAX) ||
                idv->valuedouble != (double)(int64_t)idv->valuedouble) {
                st = tdm_errorf(TDM_ERR_FORMAT, "%s: added_tokens[%lld] has no integer \"id\" in [0, %d]", jpath,
                                (long long)k, INT32_MAX);
                goto fail;
            }
            const char *content;
            int normalized;
            TDM_TRY(clip_token_value(e, 0, NULL, &content, &normalized, jpath, "added_tokens"));
            int32_t got;
            TDM_TRY(clip_add_token(t, content, normalized, (int32_t)idv->valuedouble, &got, jpath));
        }
    }
    const cJSON *known = atd ? atd : jadded;
    int32_t ids[4];
    for (int k = 0; k < 4; k++) {
        const cJSON *v = NULL;
        const char *from = cpath;
        int special_default = 0;
        if (stm) {
            v = cJSON_GetObjectItemCaseSensitive(stm, keys[k]);
            if (v && !cJSON_IsNull(v)) { from = spath; special_default = 1; }
            else v = NULL;
        }
        if (!v && cfg) {
            v = cJSON_GetObjectItemCaseSensitive(cfg, keys[k]);
            if (v && cJSON_IsNull(v)) v = NULL;
        }
        const char *content = defaults[k];
        int normalized = 0;
        if (v) TDM_TRY(clip_token_value(v, special_default, known, &content, &normalized, from, keys[k]));
        else clip_known_flags(known, content, &normalized);  /* a default keeps an added token's flags */
        TDM_TRY(clip_add_token(t, content, normalized, -1, &ids[k], from));
        if (k == 2) t->unk_id = clip_vocab_get(t, content, (int64_t)strlen(content));
    }
    t->bos_id = ids[0];
    t->eos_id = ids[1];
    t->pad_id = ids[3];
fail:
    cJSON_Delete(cfg);
    cJSON_Delete(stm);
    return st;
}

/* ---- load / free --------------------------------------------------------- */

/* Whether `path` exists; an entry that cannot be checked (other than "no
 * such file") counts as present so that opening it reports the error. */
static int clip_exists(const char *path) {
    struct stat sb;
    if (stat(path, &sb) == 0) return 1;
    return errno != ENOENT && errno != ENOTDIR;
}

tdm_status tdm_clip_tok_load(tdm_clip_tok_t **out, const char *dir) {
    tdm_status st = TDM_OK;
    char vpath[4096], mpath[4096], jpath[4096];
    cJSON *tj = NULL;
    *out = NULL;
    if (!dir) return tdm_errorf(TDM_ERR_INVALID_ARG, "clip tokenizer: no folder given");
    if (strlen(dir) > sizeof vpath - 64)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "%.200s...: path too long", dir);
    tdm_clip_tok_t *t = calloc(1, sizeof *t);
    if (!t) return tdm_errorf(TDM_ERR_NOMEM, "%s: out of memory", dir);
    t->unk_id = -1;

    /* vocab.json + merges.txt when both are there, else tokenizer.json's
     * model; tokenizer.json's added tokens count in either case */
    snprintf(vpath, sizeof vpath, "%s/vocab.json", dir);
    snprintf(mpath, sizeof mpath, "%s/merges.txt", dir);
    snprintf(jpath, sizeof jpath, "%s/tokenizer.json", dir);
    int have_v = clip_exists(vpath), have_m = clip_exists(mpath), have_j = clip_exists(jpath);
    if (have_j) TDM_TRY(tdm_json_load_tree(jpath, 0, &tj));
    if (have_v && have_m) {
        TDM_TRY(clip_load_vocab(t, vpath));
        TDM_TRY(clip_load_merges(t, mpath));
    } else if (have_j) {
        TDM_TRY(clip_load_json_model(t, tj, jpath));
    } else {
        st = tdm_errorf(TDM_ERR_IO, "%s: no tokenizer: looked for vocab.json + merges.txt and for tokenizer.json (%s)",
                        dir, have_v ? "merges.txt is missing" : have_m ? "vocab.json is missing" : "none is there");
        goto fail;
    }
    for (int b = 0; b < 256; b++) {
        unsigned char s[16];
        int n = clip_utf8_put(clip_byte_symbol(b), s);
        t->byte_id[b] = clip_vocab_get(t, (const char *)s, n);
        memcpy(s + n, "</w>", 4);
        t->byte_eow_id[b] = clip_vocab_get(t, (const char *)s, n + 4);
    }
    TDM_TRY(clip_load_specials(t, dir, tj, jpath));
    cJSON_Delete(tj);
    *out = t;
    return TDM_OK;
fail:
    cJSON_Delete(tj);
    tdm_clip_tok_free(t);
    return st;
}

void tdm_clip_tok_free(tdm_clip_tok_t *t) {
    if (!t) return;
    for (int i = 0; i < t->nadded; i++) free(t->added[i].cps);
    free(t->added);
    free(t->pool);
    free(t->vent);
    free(t->vslot);
    free(t->mslot);
    free(t);
}

int tdm_clip_tok_max_length(const tdm_clip_tok_t *t) { return t->max_length; }
int32_t tdm_clip_tok_pad_id(const tdm_clip_tok_t *t) { return t->pad_id; }
int32_t tdm_clip_tok_eos_id(const tdm_clip_tok_t *t) { return t->eos_id; }
int32_t tdm_clip_tok_bos_id(const tdm_clip_tok_t *t) { return t->bos_id; }
int64_t tdm_clip_tok_vocab_size(const tdm_clip_tok_t *t) { return t->vocab_size; }

/* ---- encoding ------------------------------------------------------------ */

/* A candidate merge in the BPE heap: the pair starting at symbol `pos`
 * (an index into the word's bytes) whose merge has rank `rank`. */
typedef struct {
    int32_t rank;
    int64_t pos;
} clip_cand_t;

typedef struct {
    const tdm_clip_tok_t *t;
    int32_t *out;         /* token ids, room for cap */
    int64_t  n, cap;
    /* word scratch, room for wcap bytes of one word */
    int64_t  wcap;
    unsigned char *bytes; /* UTF-8 bytes */
    int32_t *sym;         /* symbol starting at byte i; -1 once merged into its left neighbour */
    int64_t *next, *prev; /* live neighbours in the symbol list, -1 at the ends */
    clip_cand_t *heap;    /* min-heap by (rank, pos); room for 2 wcap */
} clip_enc_t;

static int clip_full(const clip_enc_t *e) { return e->n >= e->cap; }

static void clip_emit(clip_enc_t *e, int32_t id) {
    if (e->n < e->cap) e->out[e->n++] = id;
}

static void clip_enc_free(clip_enc_t *e) {
    free(e->bytes);
    free(e->sym);
    free(e->next);
    free(e->prev);
    free(e->heap);
}

/* Makes the word scratch hold nb bytes. */
static tdm_status clip_enc_reserve(clip_enc_t *e, int64_t nb) {
    if (nb <= e->wcap) return TDM_OK;
    int64_t cap = e->wcap * 2 > nb ? e->wcap * 2 : nb;
    if (cap < 64) cap = 64;
    if ((uint64_t)cap > SIZE_MAX / (2 * sizeof *e->heap))
        return tdm_errorf(TDM_ERR_INVALID_ARG, "clip tokenizer: a %lld-byte word is too long", (long long)nb);
    clip_enc_free(e);
    e->bytes = malloc((size_t)cap);
    e->sym = malloc((size_t)cap * sizeof *e->sym);
    e->next = malloc((size_t)cap * sizeof *e->next);
    e->prev = malloc((size_t)cap * sizeof *e->prev);
    e->heap = malloc((size_t)cap * 2 * sizeof *e->heap);
    if (!e->bytes || !e->sym || !e->next || !e->prev || !e->heap) {
        clip_enc_free(e);
        e->bytes = NULL; e->sym = NULL; e->next = NULL; e->prev = NULL; e->heap = NULL;
        e->wcap = 0;
        return tdm_errorf(TDM_ERR_NOMEM, "clip tokenizer: out of memory for a %lld-byte word", (long long)nb);
    }
    e->wcap = cap;
    return TDM_OK;
}

static int clip_cand_less(clip_cand_t a, clip_cand_t b) {
    return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos);
}

static void clip_heap_push(clip_cand_t *h, int64_t *n, clip_cand_t c) {
    int64_t i = (*n)++;
    while (i > 0) {
        int64_t up = (i - 1) / 2;
        if (!clip_cand_less(c, h[up])) break;
        h[i] = h[up];
        i = up;
    }
    h[i] = c;
}

static clip_cand_t clip_heap_pop(clip_cand_t *h, int64_t *n) {
    clip_cand_t top = h[0], last = h[--(*n)];
    int64_t i = 0;
    for (;;) {
        int64_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && clip_cand_less(h[c + 1], h[c])) c++;
        if (!clip_cand_less(h[c], last)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n > 0) h[i] = last;
    return top;
}

/* Pushes the pair starting at symbol i when it has a merge. */
static void clip_push_pair(clip_enc_t *e, int64_t *nh, int64_t i) {
    int64_t j = e->next[i];
    int32_t rank, id;
    if (j >= 0 && clip_merge_get(e->t, e->sym[i], e->sym[j], &rank, &id))
        clip_heap_push(e->heap, nh, (clip_cand_t){rank, i});
}

/* BPE of one pre-tokenized word: repeatedly merges the adjacent pair of
 * lowest rank, leftmost first. The symbols form a linked list and every
 * adjacent pair with a merge sits in a min-heap keyed by (rank, position);
 * an entry whose pair has changed since it was pushed is skipped when
 * popped. Each merge pushes at most two entries, so a word of n bytes costs
 * O(n log n). A word met once the token budget is full is skipped. */
static tdm_status clip_bpe_word(clip_enc_t *e, const uint32_t *w, int64_t n) {
    const tdm_clip_tok_t *t = e->t;
    if (clip_full(e) || n == 0) return TDM_OK;
    tdm_status st = clip_enc_reserve(e, 4 * n);
    if (st != TDM_OK) return st;
    int64_t nb = 0;
    for (int64_t i = 0; i < n; i++) nb += clip_utf8_put(w[i], e->bytes + nb);
    for (int64_t i = 0; i < nb; i++) {
        int32_t id = i == nb - 1 ? t->byte_eow_id[e->bytes[i]] : t->byte_id[e->bytes[i]];
        if (id < 0) id = t->unk_id;
        if (id < 0)
            return tdm_errorf(TDM_ERR_MODEL,
                              "clip tokenizer: byte 0x%02x has no symbol in the vocabulary and no unk token",
                              e->bytes[i]);
        e->sym[i] = id;
        e->prev[i] = i - 1;
        e->next[i] = i + 1 < nb ? i + 1 : -1;
    }
    int64_t nh = 0;
    for (int64_t i = 0; i + 1 < nb; i++) clip_push_pair(e, &nh, i);
    while (nh > 0) {
        clip_cand_t c = clip_heap_pop(e->heap, &nh);
        int64_t i = c.pos, j;
        int32_t rank, mid;
        if (e->sym[i] < 0 || (j = e->next[i]) < 0) continue;          /* merged away */
        if (!clip_merge_get(t, e->sym[i], e->sym[j], &rank, &mid) || rank != c.rank) continue;  /* stale */
        e->sym[i] = mid;
        e->sym[j] = -1;
        e->next[i] = e->next[j];
        if (e->next[j] >= 0) e->prev[e->next[j]] = i;
        if (e->prev[i] >= 0) clip_push_pair(e, &nh, e->prev[i]);
        clip_push_pair(e, &nh, i);
    }
    for (int64_t i = 0; i >= 0 && !clip_full(e); i = e->next[i]) clip_emit(e, e->sym[i]);
    return TDM_OK;
}

static int clip_starts(const uint32_t *s, int64_t n, const char *lit) {
    int64_t k = (int64_t)strlen(lit);
    if (k > n) return 0;
    for (int64_t i = 0; i < k; i++)
        if (s[i] != (unsigned char)lit[i]) return 0;
    return 1;
}

/* CLIP's pre-tokenizer pattern over normalized text, then BPE per word. */
static tdm_status clip_pretokenize(clip_enc_t *e, const uint32_t *s, int64_t n) {
    static const char *specials[2] = {"<|startoftext|>", "<|endoftext|>"};
    static const char *contractions[7] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
    tdm_status st = TDM_OK;
    int64_t i = 0;
    while (i < n && !clip_full(e)) {
        int cls = clip_class(s[i]);
        if (cls == CLIP_SPACE) { i++; continue; }
        int64_t j = i;
        int special = 0;
        for (int k = 0; k < 2 && j == i; k++)
            if (clip_starts(s + i, n - i, specials[k])) { j = i + (int64_t)strlen(specials[k]); special = 1; }
        for (int k = 0; k < 7 && j == i; k++)
            if (clip_starts(s + i, n - i, contractions[k])) j = i + (int64_t)strlen(contractions[k]);
        if (j == i) {
            if (cls == CLIP_LETTER) { while (j < n && clip_class(s[j]) == CLIP_LETTER) j++; }
            else if (cls == CLIP_NUMBER) j = i + 1;
            else { while (j < n && clip_class(s[j]) == CLIP_OTHER) j++; }
        }
        if (special) {  /* ByteLevel's GPT-2 split: "<|", name, "|>" */
            st = clip_bpe_word(e, s + i, 2);
            if (st == TDM_OK) st = clip_bpe_word(e, s + i + 2, j - i - 4);
            if (st == TDM_OK) st = clip_bpe_word(e, s + j - 2, 2);
        } else {
            st = clip_bpe_word(e, s + i, j - i);
        }
        if (st != TDM_OK) return st;
        i = j;
    }
    return TDM_OK;
}

/* Leftmost-longest match of an added token with the given `normalized`
 * flag in s[from..n): returns its start (n if none), sets *len, *id. */
static int64_t clip_find_added(const tdm_clip_tok_t *t, const uint32_t *s, int64_t n, int64_t from,
                               int normalized, int64_t *len, int32_t *id) {
    for (int64_t i = from; i < n; i++) {
        int64_t best = 0;
        for (int k = 0; k < t->nadded; k++) {
            const clip_added_t *a = &t->added[k];
            if (a->normalized != normalized || a->n > n - i || a->n <= best) continue;
            if (memcmp(s + i, a->cps, (size_t)a->n * sizeof *s) == 0) { best = a->n; *id = a->id; }
        }
        if (best) { *len = best; return i; }
    }
    return n;
}

/* Normalizes a raw segment, splits out normalized added tokens, and
 * pre-tokenizes the rest. nfc has room for 4n, low for 8n. */
static tdm_status clip_segment(clip_enc_t *e, const uint32_t *s, int64_t n, uint32_t *nfc,
                               uint32_t *low) {
    int64_t m = clip_lower(nfc, clip_nfc(s, n, nfc, low), low);
    int64_t p = 0;
    while (p < m && !clip_full(e)) {
        int64_t len = 0;
        int32_t id = -1;
        int64_t at = clip_find_added(e->t, low, m, p, 1, &len, &id);
        tdm_status st = clip_pretokenize(e, low + p, at - p);
        if (st != TDM_OK) return st;
        if (at == m) break;
        clip_emit(e, id);
        p = at + len;
    }
    return TDM_OK;
}

tdm_status tdm_clip_tok_encode(const tdm_clip_tok_t *t, const char *utf8, int32_t *ids, int L) {
    tdm_status st = TDM_OK;
    uint32_t *cps = NULL, *nfc = NULL, *low = NULL;
    clip_enc_t e = {0};
    if (!t || !utf8 || !ids) return tdm_errorf(TDM_ERR_INVALID_ARG, "clip tokenizer: NULL argument");
    if (L < 2) return tdm_errorf(TDM_ERR_INVALID_ARG, "clip tokenizer: max_length %d < 2", L);
    int64_t nb = (int64_t)strlen(utf8);
    if (nb > (INT64_MAX / 64) - 1 || (uint64_t)nb * 64 > SIZE_MAX / 2)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "clip tokenizer: text of %lld bytes is too long", (long long)nb);
    int64_t n = 0;
    cps = malloc((size_t)(nb + 1) * sizeof *cps);
    nfc = malloc((size_t)(4 * nb + 4) * sizeof *nfc);
    low = malloc((size_t)(8 * nb + 8) * sizeof *low);
    if (!cps || !nfc || !low) {
        st = tdm_errorf(TDM_ERR_NOMEM, "clip tokenizer: out of memory for %lld bytes of text", (long long)nb);
        goto fail;
    }
    int64_t bad = clip_utf8_decode((const unsigned char *)utf8, nb, cps, &n);
    if (bad >= 0) {
        st = tdm_errorf(TDM_ERR_INVALID_ARG, "clip tokenizer: invalid UTF-8 at byte offset %lld of the prompt",
                        (long long)bad);
        goto fail;
    }
    e.t = t;
    e.out = ids + 1;
    e.cap = L - 2;
    int64_t p = 0;
    while (p < n && !clip_full(&e)) {
        int64_t len = 0;
        int32_t id = -1;
        int64_t at = clip_find_added(t, cps, n, p, 0, &len, &id);
        TDM_TRY(clip_segment(&e, cps + p, at - p, nfc, low));
        if (at == n) break;
        clip_emit(&e, id);
        p = at + len;
    }
    ids[0] = t->bos_id;
    ids[1 + e.n] = t->eos_id;
    for (int64_t i = 2 + e.n; i < L; i++) ids[i] = t->pad_id;
fail:
    free(cps);
    free(nfc);
    free(low);
    clip_enc_free(&e);
    return st;
}
