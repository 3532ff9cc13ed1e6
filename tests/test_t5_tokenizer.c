// label: golden
/* test_t5_tokenizer.c — the T5 (FLUX tokenizer_2) tokenizer against ids made
 * by transformers' T5TokenizerFast (tests/fixtures/t5_tokenizer/cases.json,
 * written by tools/ref/t5_tokenizer_ref.py) on the small sentencepiece
 * vocabulary of tools/ref/t5_vocab.py, loaded from tokenizer.json and from a
 * copy holding spiece.model only; plus error cases on folders written here. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "test.h"
#include "text/t5_tokenizer.h"

#define TOK_DIR TDM_FIXTURES "/t5_tokenizer/tok"
#define CASES_JSON TDM_FIXTURES "/t5_tokenizer/cases.json"

static char tmpdir[256];

static void write_bytes(const char *dir, const char *name, const char *data, long n) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    if (!f) { printf("  cannot write %s\n", p); return; }
    if (n > 0) fwrite(data, 1, (size_t)n, f);
    fclose(f);
}

static void write_file(const char *dir, const char *name, const char *text) {
    write_bytes(dir, name, text, (long)strlen(text));
}

static void copy_file(const char *name, const char *dir) {
    char src[512];
    snprintf(src, sizeof src, "%s/%s", TOK_DIR, name);
    long n = 0;
    char *b = test_slurp_len(src, &n);
    if (!b) { printf("  cannot read %s\n", src); return; }
    write_bytes(dir, name, b, n);
    free(b);
}

static void rm_dir(const char *dir) {
    static const char *const names[] = {"tokenizer.json", "spiece.model", "tokenizer_config.json",
                                        "special_tokens_map.json"};
    char p[512];
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        unlink(p);
    }
    rmdir(dir);
}

static void sub(char *out, size_t cap, const char *name) {
    snprintf(out, cap, "%s/%s", tmpdir, name);
    mkdir(out, 0700);
}

/* Checks every case at every length against one loaded tokenizer. */
static void check_cases(const char *dir, const char *what) {
    long n = 0;
    char *text = test_slurp_len(CASES_JSON, &n);
    CHECK_MSG(text != NULL, "cannot read %s", CASES_JSON);
    if (!text) return;
    cJSON *root = cJSON_ParseWithLength(text, (size_t)n);
    free(text);
    CHECK_MSG(root != NULL, "%s: malformed JSON", CASES_JSON);
    if (!root) return;
    tdm_t5_tok_t *t = NULL;
    tdm_status st = tdm_t5_tok_load(&t, dir);
    CHECK_MSG(st == TDM_OK, "%s: load: %s", what, tdm_last_error());
    if (st != TDM_OK) { cJSON_Delete(root); return; }
    int32_t pad = tdm_t5_tok_pad_id(t);
    CHECK(pad == cJSON_GetObjectItem(root, "pad_id")->valueint);
    CHECK(tdm_t5_tok_eos_id(t) == cJSON_GetObjectItem(root, "eos_id")->valueint);
    CHECK_MSG(tdm_t5_tok_vocab_size(t) == (int64_t)cJSON_GetObjectItem(root, "vocab_size")->valuedouble,
              "%s: vocab size %lld", what, (long long)tdm_t5_tok_vocab_size(t));
    CHECK(tdm_t5_tok_max_length(t) == 512);
    const cJSON *cases = cJSON_GetObjectItem(root, "cases");
    int ncase = 0, nbad = 0, nrows = 0;
    int32_t *ids = malloc(512 * sizeof *ids);
    const cJSON *c;
    cJSON_ArrayForEach(c, cases) {
        const char *s = cJSON_GetObjectItem(c, "text")->valuestring;
        const cJSON *rows = cJSON_GetObjectItem(c, "ids");
        const cJSON *row;
        int bad = 0;
        cJSON_ArrayForEach(row, rows) {
            int L = atoi(row->string);
            if (L < 1 || L > 512) continue;
            for (int i = 0; i < L; i++) ids[i] = -7;
            st = tdm_t5_tok_encode(t, s, ids, L);
            nrows++;
            int ne = cJSON_GetArraySize(row), first = -1;
            if (st != TDM_OK) first = 0;
            for (int i = 0; i < L && first < 0; i++) {
                int32_t want = i < ne ? cJSON_GetArrayItem(row, i)->valueint : pad;
                if (ids[i] != want) first = i;
            }
            if (first >= 0 && !bad) {
                printf("  %s: \"%.50s\" L=%d: first difference at %d (got %d, want %d) %s\n", what, s, L,
                       first, ids[first],
                       first < ne ? cJSON_GetArrayItem(row, first)->valueint : pad,
                       st == TDM_OK ? "" : tdm_last_error());
                bad = 1;
            }
        }
        ncase++;
        nbad += bad;
    }
    CHECK_MSG(nbad == 0, "%s: %d of %d strings differ", what, nbad, ncase);
    CHECK_MSG(ncase >= 60 && nrows >= 240, "%s: only %d strings / %d rows", what, ncase, nrows);
    free(ids);
    tdm_t5_tok_free(t);
    cJSON_Delete(root);
}

TEST(golden_tokenizer_json) { check_cases(TOK_DIR, "tokenizer.json"); }

TEST(golden_spiece_only) {
    char d[512];
    sub(d, sizeof d, "spm");
    copy_file("spiece.model", d);
    copy_file("tokenizer_config.json", d);
    copy_file("special_tokens_map.json", d);
    check_cases(d, "spiece.model");
    rm_dir(d);
}

TEST(basic_layout) {
    tdm_t5_tok_t *t = NULL;
    tdm_status st = tdm_t5_tok_load(&t, TOK_DIR);
    CHECK_MSG(st == TDM_OK, "%s", tdm_last_error());
    if (st != TDM_OK) return;
    int32_t ids[8];
    CHECK(tdm_t5_tok_encode(t, "", ids, 4) == TDM_OK);
    CHECK(ids[0] == 1 && ids[1] == 0 && ids[2] == 0 && ids[3] == 0);
    CHECK(tdm_t5_tok_encode(t, "a cat", ids, 1) == TDM_OK);   /* L=1: only </s> */
    CHECK(ids[0] == 1);
    CHECK(tdm_t5_tok_encode(t, "a cat", ids, 0) == TDM_ERR_INVALID_ARG);
    CHECK(tdm_t5_tok_encode(t, NULL, ids, 4) == TDM_ERR_INVALID_ARG);
    tdm_t5_tok_free(t);
    tdm_t5_tok_free(NULL);
}

TEST(invalid_utf8) {
    tdm_t5_tok_t *t = NULL;
    if (tdm_t5_tok_load(&t, TOK_DIR) != TDM_OK) { CHECK_MSG(0, "%s", tdm_last_error()); return; }
    static const char *const bad[] = {"abc\xff", "ab\xc3", "\xe2\x82", "x\xc0\xaf", "ok \xed\xa0\x80",
                                      "\xf4\x90\x80\x80", "\x80"};
    static const int off[] = {3, 2, 0, 1, 3, 0, 0};
    int32_t ids[16];
    for (int i = 0; i < 7; i++) {
        tdm_status st = tdm_t5_tok_encode(t, bad[i], ids, 16);
        char want[32];
        snprintf(want, sizeof want, "byte %d", off[i]);
        CHECK_MSG(st == TDM_ERR_INVALID_ARG && strstr(tdm_last_error(), want),
                  "case %d: status %d, \"%s\"", i, (int)st, tdm_last_error());
    }
    tdm_t5_tok_free(t);
}

TEST(error_bpe_model) {
    char d[512];
    sub(d, sizeof d, "bpe");
    write_file(d, "tokenizer.json",
               "{\"version\":\"1.0\",\"added_tokens\":[],\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},"
               "\"merges\":[]}}");
    tdm_t5_tok_t *t = (tdm_t5_tok_t *)&t;
    tdm_status st = tdm_t5_tok_load(&t, d);
    CHECK_MSG(st == TDM_ERR_UNSUPPORTED && strstr(tdm_last_error(), "tokenizer.json") &&
                  strstr(tdm_last_error(), "BPE"),
              "status %d: %s", (int)st, tdm_last_error());
    CHECK(t == NULL);
    write_file(d, "tokenizer.json", "{\"model\":{\"type\":\"WordPiece\",\"vocab\":{\"a\":0}}}");
    st = tdm_t5_tok_load(&t, d);
    CHECK_MSG(st == TDM_ERR_UNSUPPORTED && strstr(tdm_last_error(), "WordPiece"), "%s", tdm_last_error());
    rm_dir(d);
}

TEST(error_malformed_json) {
    char d[512];
    sub(d, sizeof d, "malformed");
    write_file(d, "tokenizer.json", "{\"model\": {\"type\": \"Unigram\", \"vocab\": [[\"a\", -1.0],");
    tdm_t5_tok_t *t = NULL;
    tdm_status st = tdm_t5_tok_load(&t, d);
    CHECK_MSG(st == TDM_ERR_FORMAT && strstr(tdm_last_error(), "tokenizer.json"), "%s", tdm_last_error());
    /* well-formed JSON, wrong shapes */
    write_file(d, "tokenizer.json", "{\"model\": {\"type\": \"Unigram\", \"unk_id\": 0, \"vocab\": [[\"a\"]]}}");
    st = tdm_t5_tok_load(&t, d);
    CHECK_MSG(st == TDM_ERR_FORMAT, "%s", tdm_last_error());
    write_file(d, "tokenizer.json", "{\"model\": {\"type\": \"Unigram\", \"unk_id\": 5, \"vocab\": [[\"a\", -1]]}}");
    st = tdm_t5_tok_load(&t, d);
    CHECK_MSG(st == TDM_ERR_FORMAT && strstr(tdm_last_error(), "unk_id"), "%s", tdm_last_error());
    write_file(d, "tokenizer.json",
               "{\"model\": {\"type\": \"Unigram\", \"unk_id\": 0, \"vocab\": [[\"<unk>\", 0]]},"
               "\"normalizer\": {\"type\": \"Precompiled\", \"precompiled_charsmap\": \"@@@@\"}}");
    st = tdm_t5_tok_load(&t, d);
    CHECK_MSG(st == TDM_ERR_FORMAT && strstr(tdm_last_error(), "base64"), "%s", tdm_last_error());
    /* a broken tokenizer_config.json is reported, not ignored */
    copy_file("tokenizer.json", d);
    write_file(d, "tokenizer_config.json", "{\"pad_token\": ");
    st = tdm_t5_tok_load(&t, d);
    CHECK_MSG(st == TDM_ERR_FORMAT && strstr(tdm_last_error(), "tokenizer_config.json"), "%s", tdm_last_error());
    CHECK(t == NULL);
    rm_dir(d);
}

TEST(error_missing_files) {
    char d[512];
    sub(d, sizeof d, "empty");
    tdm_t5_tok_t *t = NULL;
    tdm_status st = tdm_t5_tok_load(&t, d);
    CHECK_MSG(st == TDM_ERR_IO && strstr(tdm_last_error(), "spiece.model"), "%s", tdm_last_error());
    st = tdm_t5_tok_load(&t, TDM_FIXTURES "/t5_tokenizer/no_such_dir");
    CHECK(st == TDM_ERR_IO && t == NULL);
    rm_dir(d);
}

TEST(error_bad_spiece) {
    char d[512];
    sub(d, sizeof d, "badspm");
    /* truncated protobuf: a length-delimited field running past the end */
    write_bytes(d, "spiece.model", "\x0a\x50\x0a\x03" "abc", 7);
    tdm_t5_tok_t *t = NULL;
    tdm_status st = tdm_t5_tok_load(&t, d);
    CHECK_MSG(st == TDM_ERR_FORMAT && strstr(tdm_last_error(), "spiece.model"), "%s", tdm_last_error());
    /* a BPE sentencepiece model: pieces "<unk>", "a"; trainer_spec model_type = 2 */
    write_bytes(d, "spiece.model", "\x0a\x0c\x0a\x05<unk>\x15\x00\x00\x00\x00\x0a\x08\x0a\x01" "a\x15\x00\x00\x80\xbf"
                "\x12\x02\x18\x02", 28);
    st = tdm_t5_tok_load(&t, d);
    CHECK_MSG(st == TDM_ERR_UNSUPPORTED && strstr(tdm_last_error(), "BPE"), "%s", tdm_last_error());
    /* the same as UNIGRAM with no charsmap and extra_ids 0 loads and encodes */
    write_bytes(d, "spiece.model", "\x0a\x0c\x0a\x05<unk>\x15\x00\x00\x00\x00\x0a\x08\x0a\x01" "a\x15\x00\x00\x80\xbf"
                "\x12\x02\x18\x01", 28);
    write_file(d, "tokenizer_config.json", "{\"extra_ids\": 0}");
    st = tdm_t5_tok_load(&t, d);
    CHECK_MSG(st == TDM_OK, "%s", tdm_last_error());
    if (st == TDM_OK) {
        /* no "</s>"/"<pad>" pieces: they become added tokens 2 and 3 */
        CHECK(tdm_t5_tok_pad_id(t) == 2 && tdm_t5_tok_eos_id(t) == 3 && tdm_t5_tok_vocab_size(t) == 4);
        int32_t ids[6];
        CHECK(tdm_t5_tok_encode(t, "a b", ids, 6) == TDM_OK);
        /* "▁a" -> unk("▁") a -> ids 0 1; "▁b" -> one fused unk */
        CHECK_MSG(ids[0] == 0 && ids[1] == 1 && ids[2] == 0 && ids[3] == 3 && ids[4] == 2,
                  "%d %d %d %d %d", ids[0], ids[1], ids[2], ids[3], ids[4]);
        tdm_t5_tok_free(t);
    }
    rm_dir(d);
}

TEST(error_added_token_options) {
    char d[512];
    sub(d, sizeof d, "lstrip");
    write_file(d, "tokenizer.json",
               "{\"added_tokens\":[{\"id\":1,\"content\":\"<mask>\",\"lstrip\":true,\"rstrip\":false}],"
               "\"model\":{\"type\":\"Unigram\",\"unk_id\":0,\"vocab\":[[\"<unk>\",0],[\"<mask>\",0]]}}");
    tdm_t5_tok_t *t = NULL;
    tdm_status st = tdm_t5_tok_load(&t, d);
    CHECK_MSG(st == TDM_ERR_UNSUPPORTED && strstr(tdm_last_error(), "lstrip"), "%s", tdm_last_error());
    rm_dir(d);
}

/* Ids from tokenizer.json are checked before use: an unk_id or added-token
 * id that is no int (1e300 was cast unchecked), an added token on another
 * piece's id or on another added token's, a non-finite score. */
TEST(error_ids) {
    static const struct { const char *json; const char *what; } bad[] = {
        {"{\"model\":{\"type\":\"Unigram\",\"unk_id\":1e300,\"vocab\":[[\"<unk>\",0]]}}", "unk_id"},
        {"{\"model\":{\"type\":\"Unigram\",\"unk_id\":0,\"vocab\":[[\"<unk>\",0]]},"
         "\"added_tokens\":[{\"id\":1e300,\"content\":\"<x>\"}]}", "\"id\""},
        {"{\"model\":{\"type\":\"Unigram\",\"unk_id\":0,\"vocab\":[[\"<unk>\",0]]},"
         "\"added_tokens\":[{\"id\":2147483647,\"content\":\"<x>\"}]}", "\"id\""},
        {"{\"model\":{\"type\":\"Unigram\",\"unk_id\":0,\"vocab\":[[\"<unk>\",0],[\"a\",-1]]},"
         "\"added_tokens\":[{\"id\":1,\"content\":\"<x>\"}]}", "piece \"a\""},
        {"{\"model\":{\"type\":\"Unigram\",\"unk_id\":0,\"vocab\":[[\"<unk>\",0]]},"
         "\"added_tokens\":[{\"id\":5,\"content\":\"<x>\"},{\"id\":5,\"content\":\"<y>\"}]}", "\"<y>\""},
        {"{\"model\":{\"type\":\"Unigram\",\"unk_id\":0,\"vocab\":[[\"<unk>\",0],[\"a\",-1e999]]}}", "piece 1"},
    };
    char d[300];
    sub(d, sizeof d, "ids");
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_file(d, "tokenizer.json", bad[i].json);
        tdm_t5_tok_t *t = (tdm_t5_tok_t *)&t;
        tdm_status st = tdm_t5_tok_load(&t, d);
        CHECK_MSG(st != TDM_OK && strstr(tdm_last_error(), "tokenizer.json") &&
                      strstr(tdm_last_error(), bad[i].what) && !strchr(tdm_last_error(), '\n'),
                  "case %zu: status %d, \"%s\"", i, (int)st, tdm_last_error());
        CHECK(t == NULL);
    }
    /* added_tokens_decoder ids in tokenizer_config.json */
    write_file(d, "tokenizer.json", "{\"model\":{\"type\":\"Unigram\",\"unk_id\":0,\"vocab\":[[\"<unk>\",0]]}}");
    write_file(d, "tokenizer_config.json", "{\"added_tokens_decoder\": {\"99999999999\": {\"content\": \"<x>\"}}}");
    tdm_t5_tok_t *t = NULL;
    tdm_status st = tdm_t5_tok_load(&t, d);
    CHECK_MSG(st == TDM_ERR_FORMAT && strstr(tdm_last_error(), "tokenizer_config.json") &&
                  strstr(tdm_last_error(), "<x>"), "status %d, \"%s\"", (int)st, tdm_last_error());
    write_file(d, "tokenizer_config.json", "{\"added_tokens_decoder\": {\"0\": {\"content\": \"<x>\"}}}");
    st = tdm_t5_tok_load(&t, d);
    CHECK_MSG(st == TDM_ERR_FORMAT && strstr(tdm_last_error(), "<unk>"), "status %d, \"%s\"", (int)st,
              tdm_last_error());
    rm_dir(d);
}

/* A 1 MB prompt, one word or many, tokenizes in well under a second: the
 * Viterbi pass is linear in the word length (at most max_piece_len lookups
 * per byte), measured at 0.2-0.4 s of CPU for 1 MB; the bound is generous
 * for sanitizer builds. */
TEST(long_prompts_fast) {
    tdm_t5_tok_t *t = NULL;
    if (tdm_t5_tok_load(&t, TOK_DIR) != TDM_OK) { CHECK_MSG(0, "%s", tdm_last_error()); return; }
    const size_t n = 1 << 20;
    char *s = malloc(n + 1);
    int32_t ids[512];
    for (int mode = 0; mode < 3; mode++) {
        for (size_t i = 0; i < n; i++) {
            char c = (char)('a' + (i * 7 + i / 3) % 26);
            s[i] = mode == 0 ? c : mode == 1 ? 'a' : (i % 6 == 5 ? ' ' : c);
        }
        s[n] = 0;
        clock_t t0 = clock();
        tdm_status st = tdm_t5_tok_encode(t, s, ids, 512);
        double dt = (double)(clock() - t0) / CLOCKS_PER_SEC;
        CHECK_MSG(st == TDM_OK && dt < 5.0, "1 MB prompt, mode %d: status %d, %.2f s of CPU time", mode, (int)st,
                  dt);
        CHECK(ids[511] == tdm_t5_tok_eos_id(t));
    }
    free(s);
    tdm_t5_tok_free(t);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/tdm_t5tok_%d", (int)getpid());
    mkdir(tmpdir, 0700);
    RUN(golden_tokenizer_json);
    RUN(golden_spiece_only);
    RUN(basic_layout);
    RUN(invalid_utf8);
    RUN(error_bpe_model);
    RUN(error_malformed_json);
    RUN(error_missing_files);
    RUN(error_bad_spiece);
    RUN(error_added_token_options);
    RUN(error_ids);
    RUN(long_prompts_fast);
    rmdir(tmpdir);
    return test_summary();
}
