/* test_clip_tokenizer.c — the CLIP tokenizer against ids produced by
 * transformers' CLIPTokenizer (tests/fixtures/tokenizer/cases.json, written
 * by tools/ref/tokenizer_ref.py) with the full CLIP vocabulary (SD1.x pad,
 * SD2.x pad "!") and a truncated one, plus error cases on small vocabularies
 * written here. The full-vocabulary part needs tests/fixtures/clip-vocab/
 * (made by tools/fetch_clip_vocab.sh, `make vocab`) and runs as its own
 * ctest entry (--full-vocab), reported as skipped without it. The truncated
 * vocabulary is also read from tests/fixtures/tokenizer/json_only/
 * (committed): tokenizer.json + tokenizer_config.json as transformers 5's
 * save_pretrained writes them, no vocab.json/merges.txt. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "test.h"
#include "text/clip_tokenizer.h"

#define VOCAB_DIR TDM_FIXTURES "/clip-vocab"
#define CASES_JSON TDM_FIXTURES "/tokenizer/cases.json"
#define JSON_ONLY_DIR TDM_FIXTURES "/tokenizer/json_only"

static char tmpdir[256];

static int have_vocab(void) {
    struct stat sb;
    return stat(VOCAB_DIR "/vocab.json", &sb) == 0 && stat(VOCAB_DIR "/sd2/vocab.json", &sb) == 0 &&
           stat(VOCAB_DIR "/trunc/vocab.json", &sb) == 0;
}

static void write_file(const char *dir, const char *name, const char *text) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    if (!f) { printf("  cannot write %s\n", p); return; }
    fputs(text, f);
    fclose(f);
}

/* A tiny tokenizer folder: byte symbols for a..e (+</w>), two merges. */
static void make_tiny(const char *dir, const char *vocab, const char *merges) {
    mkdir(dir, 0700);
    write_file(dir, "vocab.json", vocab);
    write_file(dir, "merges.txt", merges);
}

static const char *TINY_VOCAB =
    "{\"a\":0,\"b\":1,\"c\":2,\"a</w>\":3,\"b</w>\":4,\"c</w>\":5,\"ab\":6,\"abc</w>\":7,"
    "\"<|startoftext|>\":8,\"<|endoftext|>\":9}";
static const char *TINY_MERGES = "#version: 0.2\na b\nab c</w>\n";

static int one_line(const char *s) { return strchr(s, '\n') == NULL && s[0] != 0; }

/* Runs every case of cases.json for one variant; returns the number of mismatches. */
static int run_variant(const cJSON *cases, const char *key, const char *dir, int32_t want_pad) {
    tdm_clip_tok_t *t = NULL;
    tdm_status st = tdm_clip_tok_load(&t, dir);
    CHECK_MSG(st == TDM_OK, "%s: %s", dir, tdm_last_error());
    if (st != TDM_OK) return 1;
    CHECK_MSG(tdm_clip_tok_pad_id(t) == want_pad, "%s pad id %d, want %d", key, tdm_clip_tok_pad_id(t),
              want_pad);
    int bad = 0, count = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cases) {
        const char *text = cJSON_GetObjectItem(c, "text")->valuestring;
        int L = cJSON_GetObjectItem(c, "L")->valueint;
        const cJSON *exp = cJSON_GetObjectItem(c, key);
        int32_t *got = malloc((size_t)L * sizeof *got), *want = malloc((size_t)L * sizeof *want);
        int n = cJSON_GetArraySize(exp);
        for (int i = 0; i < L; i++) want[i] = i < n ? cJSON_GetArrayItem(exp, i)->valueint : want_pad;
        st = tdm_clip_tok_encode(t, text, got, L);
        count++;
        if (st != TDM_OK) {
            printf("  %s: encode \"%.40s\" failed: %s\n", key, text, tdm_last_error());
            bad++;
        } else {
            for (int i = 0; i < L; i++) {
                if (got[i] != want[i]) {
                    printf("  %s: \"%.50s\" (L=%d): id[%d] = %d, transformers %d\n", key, text, L, i, got[i],
                           want[i]);
                    bad++;
                    break;
                }
            }
        }
        free(got);
        free(want);
    }
    CHECK_MSG(bad == 0, "%s: %d of %d strings differ from transformers", key, bad, count);
    tdm_clip_tok_free(t);
    return bad;
}

TEST(golden_full_vocab) {
    char *text = test_slurp(CASES_JSON);
    CHECK_MSG(text != NULL, "cannot read %s", CASES_JSON);
    if (!text) return;
    cJSON *root = cJSON_Parse(text);
    free(text);
    CHECK(root != NULL);
    if (!root) return;
    const cJSON *cases = cJSON_GetObjectItem(root, "cases");
    CHECK(cJSON_GetArraySize(cases) >= 60);
    run_variant(cases, "sd1", VOCAB_DIR, 49407);
    run_variant(cases, "sd2", VOCAB_DIR "/sd2", 0);
    run_variant(cases, "trunc", VOCAB_DIR "/trunc", 0);
    cJSON_Delete(root);
}

static cJSON *load_cases(void) {
    char *text = test_slurp(CASES_JSON);
    CHECK_MSG(text != NULL, "cannot read %s", CASES_JSON);
    if (!text) return NULL;
    cJSON *root = cJSON_Parse(text);
    free(text);
    CHECK(root != NULL);
    return root;
}

/* Writes `root` (consumed) to dir/name. */
static void write_json(const char *dir, const char *name, cJSON *root) {
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    CHECK(text != NULL);
    if (!text) return;
    write_file(dir, name, text);
    free(text);
}

TEST(golden_json_only) {
    cJSON *root = load_cases();
    if (!root) return;
    const cJSON *cases = cJSON_GetObjectItem(root, "cases");
    /* as saved: merges as ["a", "b"] pairs */
    run_variant(cases, "trunc", JSON_ONLY_DIR, 0);
    tdm_clip_tok_t *t = NULL;
    CHECK_MSG(tdm_clip_tok_load(&t, JSON_ONLY_DIR) == TDM_OK, "%s", tdm_last_error());
    if (t) {
        CHECK(tdm_clip_tok_vocab_size(t) == 256 + 256 + 1000 + 2);
        CHECK(tdm_clip_tok_bos_id(t) == 1512 && tdm_clip_tok_eos_id(t) == 1513 && tdm_clip_tok_pad_id(t) == 0);
        CHECK(tdm_clip_tok_max_length(t) == 77);
        tdm_clip_tok_free(t);
    }
    /* the same file with merges as "a b" strings (older tokenizers files) */
    char dir[300];
    snprintf(dir, sizeof dir, "%s/json-str-merges", tmpdir);
    mkdir(dir, 0700);
    char *text = test_slurp(JSON_ONLY_DIR "/tokenizer.json");
    cJSON *tj = text ? cJSON_Parse(text) : NULL;
    free(text);
    cJSON *merges = cJSON_GetObjectItem(cJSON_GetObjectItem(tj, "model"), "merges");
    CHECK(cJSON_GetArraySize(merges) == 1000);
    int n = cJSON_GetArraySize(merges);
    for (int i = 0; i < n; i++) {
        const cJSON *m = cJSON_GetArrayItem(merges, i);
        const char *a = cJSON_GetArrayItem(m, 0)->valuestring, *b = cJSON_GetArrayItem(m, 1)->valuestring;
        char *joined = malloc(strlen(a) + strlen(b) + 2);
        sprintf(joined, "%s %s", a, b);
        cJSON_ReplaceItemInArray(merges, i, cJSON_CreateString(joined));
        free(joined);
    }
    CHECK(tj != NULL);
    if (!tj) { cJSON_Delete(root); return; }
    write_json(dir, "tokenizer.json", tj);
    text = test_slurp(JSON_ONLY_DIR "/tokenizer_config.json");
    if (text) write_file(dir, "tokenizer_config.json", text);
    free(text);
    run_variant(cases, "trunc", dir, 0);
    cJSON_Delete(root);
}

/* The full SD1.x vocabulary converted here to a tokenizer.json-only folder
 * laid out as transformers 5 saves it (same added_tokens flags, the config
 * naming the special tokens as strings), checked against cases.json. */
TEST(golden_full_vocab_json) {
    char dir[300];
    snprintf(dir, sizeof dir, "%s/json-full", tmpdir);
    mkdir(dir, 0700);
    char *vtext = test_slurp(VOCAB_DIR "/vocab.json"), *mtext = test_slurp(VOCAB_DIR "/merges.txt");
    cJSON *vocab = vtext ? cJSON_Parse(vtext) : NULL;
    CHECK(vocab != NULL && mtext != NULL);
    cJSON *tj = cJSON_CreateObject(), *model = cJSON_AddObjectToObject(tj, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddStringToObject(model, "end_of_word_suffix", "</w>");
    cJSON_AddItemToObject(model, "vocab", vocab ? vocab : cJSON_CreateObject());
    cJSON *merges = cJSON_AddArrayToObject(model, "merges");
    for (char *line = mtext ? strtok(mtext, "\n") : NULL; line; line = strtok(NULL, "\n")) {
        if (strncmp(line, "#version", 8) == 0) continue;
        char *sp = strchr(line, ' ');
        if (!sp) continue;
        *sp = 0;
        cJSON *pair = cJSON_CreateArray();
        cJSON_AddItemToArray(pair, cJSON_CreateString(line));
        cJSON_AddItemToArray(pair, cJSON_CreateString(sp + 1));
        cJSON_AddItemToArray(merges, pair);
    }
    cJSON *added = cJSON_AddArrayToObject(tj, "added_tokens");
    static const char *sp_content[2] = {"<|startoftext|>", "<|endoftext|>"};
    for (int k = 0; k < 2; k++) {
        cJSON *a = cJSON_CreateObject();
        cJSON_AddNumberToObject(a, "id", 49406 + k);
        cJSON_AddStringToObject(a, "content", sp_content[k]);
        cJSON_AddBoolToObject(a, "normalized", k == 0);  /* pad "<|endoftext|>" was a plain string */
        cJSON_AddBoolToObject(a, "special", 1);
        cJSON_AddItemToArray(added, a);
    }
    free(vtext);
    free(mtext);
    write_json(dir, "tokenizer.json", tj);
    write_file(dir, "tokenizer_config.json",
               "{\"bos_token\": \"<|startoftext|>\", \"eos_token\": \"<|endoftext|>\", "
               "\"unk_token\": \"<|endoftext|>\", \"pad_token\": \"<|endoftext|>\", \"model_max_length\": 77}");
    cJSON *root = load_cases();
    if (!root) return;
    run_variant(cJSON_GetObjectItem(root, "cases"), "sd1", dir, 49407);
    cJSON_Delete(root);
    tdm_clip_tok_t *t = NULL;
    CHECK_MSG(tdm_clip_tok_load(&t, dir) == TDM_OK, "%s", tdm_last_error());
    if (t) CHECK(tdm_clip_tok_vocab_size(t) == 49408);
    tdm_clip_tok_free(t);
}

TEST(accessors_full_vocab) {
    tdm_clip_tok_t *t = NULL;
    CHECK_MSG(tdm_clip_tok_load(&t, VOCAB_DIR) == TDM_OK, "%s", tdm_last_error());
    if (!t) return;
    CHECK(tdm_clip_tok_max_length(t) == 77);
    CHECK(tdm_clip_tok_bos_id(t) == 49406);
    CHECK(tdm_clip_tok_eos_id(t) == 49407);
    CHECK(tdm_clip_tok_pad_id(t) == 49407);
    CHECK(tdm_clip_tok_vocab_size(t) == 49408);
    int32_t ids[77];
    CHECK(tdm_clip_tok_encode(t, "a photo of a cat", ids, 77) == TDM_OK);
    static const int32_t want[7] = {49406, 320, 1125, 539, 320, 2368, 49407};
    CHECK(memcmp(ids, want, sizeof want) == 0);
    CHECK(ids[76] == 49407);
    tdm_clip_tok_free(t);

    CHECK_MSG(tdm_clip_tok_load(&t, VOCAB_DIR "/trunc") == TDM_OK, "%s", tdm_last_error());
    if (!t) return;
    CHECK(tdm_clip_tok_vocab_size(t) == 256 + 256 + 1000 + 2);
    CHECK(tdm_clip_tok_bos_id(t) == 1512 && tdm_clip_tok_eos_id(t) == 1513 && tdm_clip_tok_pad_id(t) == 0);
    tdm_clip_tok_free(t);
}

TEST(tiny_vocab_bpe) {
    char dir[300];
    snprintf(dir, sizeof dir, "%s/tiny", tmpdir);
    make_tiny(dir, TINY_VOCAB, TINY_MERGES);
    tdm_clip_tok_t *t = NULL;
    CHECK_MSG(tdm_clip_tok_load(&t, dir) == TDM_OK, "%s", tdm_last_error());
    if (!t) return;
    /* no config files: CLIPTokenizer's defaults, max length 77 */
    CHECK(tdm_clip_tok_max_length(t) == 77);
    CHECK(tdm_clip_tok_bos_id(t) == 8 && tdm_clip_tok_eos_id(t) == 9 && tdm_clip_tok_pad_id(t) == 9);
    int32_t ids[8];
    CHECK(tdm_clip_tok_encode(t, "ABC ab", ids, 8) == TDM_OK);
    /* "abc" -> a b c</w> -> ab c</w> -> abc</w>; "ab" -> a b</w> (no "a b</w>" merge) */
    CHECK(ids[0] == 8 && ids[1] == 7 && ids[2] == 0 && ids[3] == 4 && ids[4] == 9 && ids[7] == 9);
    /* a byte with no symbol and <|endoftext|> as unk: the unk id */
    CHECK(tdm_clip_tok_encode(t, "z", ids, 4) == TDM_OK);
    CHECK(ids[1] == 9 && ids[2] == 9);
    /* L = 2 keeps only BOS/EOS; L < 2 is an error */
    CHECK(tdm_clip_tok_encode(t, "abc", ids, 2) == TDM_OK && ids[0] == 8 && ids[1] == 9);
    CHECK(tdm_clip_tok_encode(t, "abc", ids, 1) == TDM_ERR_INVALID_ARG);
    tdm_clip_tok_free(t);
}

TEST(invalid_utf8) {
    char dir[300];
    snprintf(dir, sizeof dir, "%s/tiny", tmpdir);
    make_tiny(dir, TINY_VOCAB, TINY_MERGES);
    tdm_clip_tok_t *t = NULL;
    CHECK_MSG(tdm_clip_tok_load(&t, dir) == TDM_OK, "%s", tdm_last_error());
    if (!t) return;
    static const struct { const char *s; const char *off; } bad[] = {
        {"abc\x80", "offset 3"},            /* lone continuation byte */
        {"a\xC0\xAF", "offset 1"},          /* overlong '/' */
        {"ab\xE0\x80\x80", "offset 2"},     /* overlong NUL */
        {"\xED\xA0\x80", "offset 0"},       /* UTF-16 surrogate */
        {"abc\xE2\x82", "offset 3"},        /* truncated sequence */
        {"\xF4\x90\x80\x80", "offset 0"},   /* above U+10FFFF */
        {"ok \xFF", "offset 3"},            /* never valid */
        {"\xC3(", "offset 0"},              /* bad continuation */
    };
    int32_t ids[77];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tdm_status st = tdm_clip_tok_encode(t, bad[i].s, ids, 77);
        CHECK_MSG(st == TDM_ERR_INVALID_ARG, "case %zu: status %d", i, (int)st);
        CHECK_MSG(strstr(tdm_last_error(), bad[i].off) != NULL, "case %zu: \"%s\" lacks \"%s\"", i,
                  tdm_last_error(), bad[i].off);
        CHECK(one_line(tdm_last_error()));
    }
    /* valid 4-byte and 3-byte sequences pass */
    CHECK(tdm_clip_tok_encode(t, "\xF0\x9F\x99\x82 \xE2\x82\xAC", ids, 77) == TDM_OK);
    tdm_clip_tok_free(t);
}

/* Loading `dir` fails with status `want` and a one-line message naming `file`. */
static void expect_load_error(const char *dir, tdm_status want, const char *file) {
    tdm_clip_tok_t *t = (tdm_clip_tok_t *)1;
    tdm_status st = tdm_clip_tok_load(&t, dir);
    CHECK_MSG(st == want, "%s: status %d, want %d (%s)", dir, (int)st, (int)want, tdm_last_error());
    CHECK(t == NULL);
    CHECK_MSG(strstr(tdm_last_error(), file) != NULL, "\"%s\" does not name %s", tdm_last_error(), file);
    CHECK(one_line(tdm_last_error()));
    if (st == TDM_OK) tdm_clip_tok_free(t);
}

TEST(bad_files) {
    char dir[300];
    snprintf(dir, sizeof dir, "%s/missing-folder", tmpdir);
    expect_load_error(dir, TDM_ERR_IO, "vocab.json");
    CHECK(strstr(tdm_last_error(), dir) && strstr(tdm_last_error(), "merges.txt") &&
          strstr(tdm_last_error(), "tokenizer.json"));

    snprintf(dir, sizeof dir, "%s/no-merges", tmpdir);
    mkdir(dir, 0700);
    write_file(dir, "vocab.json", TINY_VOCAB);
    expect_load_error(dir, TDM_ERR_IO, "merges.txt");

    snprintf(dir, sizeof dir, "%s/bad-json", tmpdir);
    make_tiny(dir, "{\"a\": 0, \"b\": ", TINY_MERGES);
    expect_load_error(dir, TDM_ERR_FORMAT, "vocab.json");

    snprintf(dir, sizeof dir, "%s/not-object", tmpdir);
    make_tiny(dir, "[\"a\", \"b\"]", TINY_MERGES);
    expect_load_error(dir, TDM_ERR_FORMAT, "vocab.json");

    snprintf(dir, sizeof dir, "%s/neg-id", tmpdir);
    make_tiny(dir, "{\"a\": -1}", TINY_MERGES);
    expect_load_error(dir, TDM_ERR_FORMAT, "vocab.json");

    snprintf(dir, sizeof dir, "%s/empty-vocab", tmpdir);
    make_tiny(dir, "{}", TINY_MERGES);
    expect_load_error(dir, TDM_ERR_FORMAT, "vocab.json");

    snprintf(dir, sizeof dir, "%s/merge-3-parts", tmpdir);
    make_tiny(dir, TINY_VOCAB, "#version: 0.2\na b\na b c\n");
    expect_load_error(dir, TDM_ERR_FORMAT, "merges.txt");
    CHECK(strstr(tdm_last_error(), "line 3") != NULL);

    snprintf(dir, sizeof dir, "%s/merge-empty-line", tmpdir);
    make_tiny(dir, TINY_VOCAB, "#version: 0.2\n\na b\n");
    expect_load_error(dir, TDM_ERR_FORMAT, "merges.txt");

    snprintf(dir, sizeof dir, "%s/merge-unknown", tmpdir);
    make_tiny(dir, TINY_VOCAB, "#version: 0.2\na q\n");
    expect_load_error(dir, TDM_ERR_FORMAT, "merges.txt");
    CHECK(strstr(tdm_last_error(), "\"q\"") != NULL);

    snprintf(dir, sizeof dir, "%s/merge-result-unknown", tmpdir);
    make_tiny(dir, TINY_VOCAB, "#version: 0.2\nb c\n");
    expect_load_error(dir, TDM_ERR_FORMAT, "merges.txt");

    snprintf(dir, sizeof dir, "%s/bad-config", tmpdir);
    make_tiny(dir, TINY_VOCAB, TINY_MERGES);
    write_file(dir, "tokenizer_config.json", "{\"model_max_length\": 77,");
    expect_load_error(dir, TDM_ERR_FORMAT, "tokenizer_config.json");

    snprintf(dir, sizeof dir, "%s/bad-config-type", tmpdir);
    make_tiny(dir, TINY_VOCAB, TINY_MERGES);
    write_file(dir, "tokenizer_config.json", "{\"model_max_length\": \"77\"}");
    expect_load_error(dir, TDM_ERR_FORMAT, "tokenizer_config.json");

    snprintf(dir, sizeof dir, "%s/bad-stm", tmpdir);
    make_tiny(dir, TINY_VOCAB, TINY_MERGES);
    write_file(dir, "special_tokens_map.json", "{\"pad_token\": 5}");
    expect_load_error(dir, TDM_ERR_FORMAT, "special_tokens_map.json");

    tdm_clip_tok_free(NULL);  /* no-op */
}

/* TINY_VOCAB/TINY_MERGES as a tokenizer.json model; `merges` is the JSON of
 * model.merges, `added` that of added_tokens. */
static void write_tiny_json(const char *dir, const char *type, const char *merges, const char *added) {
    char buf[2048];
    snprintf(buf, sizeof buf,
             "{\"version\": \"1.0\", \"added_tokens\": %s, \"model\": {\"type\": \"%s\", "
             "\"unk_token\": \"<|endoftext|>\", \"end_of_word_suffix\": \"</w>\", \"vocab\": %s, "
             "\"merges\": %s}, \"post_processor\": {\"type\": \"RobertaProcessing\", "
             "\"sep\": [\"<|endoftext|>\", 9], \"cls\": [\"<|startoftext|>\", 8]}}",
             added, type, TINY_VOCAB, merges);
    mkdir(dir, 0700);
    write_file(dir, "tokenizer.json", buf);
}

static const char *TINY_ADDED =
    "[{\"id\": 8, \"content\": \"<|startoftext|>\", \"normalized\": true, \"special\": true}, "
    "{\"id\": 9, \"content\": \"<|endoftext|>\", \"normalized\": true, \"special\": true}]";

/* Ids must be 0..n-1, each once; an id of 2^31-1 once overflowed the
 * next-added-id counter. Each error names the file and the token. */
TEST(vocab_ids) {
    static const struct { const char *vocab; const char *tok; } bad[] = {
        {"{\"a\":0,\"b\":1,\"c\":2147483647}", "\"c\""},    /* far past the end */
        {"{\"a\":0,\"b\":1,\"c\":3}", "\"c\""},             /* a gap */
        {"{\"a\":0,\"b\":1,\"c\":1}", "\"c\""},             /* shared id */
        {"{\"a\":0,\"b\":1,\"c\":2.5}", "\"c\""},           /* not an integer */
        {"{\"a\":0,\"b\":1,\"c\":1e300}", "\"c\""},
        {"{\"a\":0,\"a\":1}", "\"a\""},                       /* key repeated: last id 1 of 1 token */
    };
    char dir[300];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(dir, sizeof dir, "%s/ids-%zu", tmpdir, i);
        make_tiny(dir, bad[i].vocab, "#version: 0.2\n");
        expect_load_error(dir, TDM_ERR_FORMAT, "vocab.json");
        CHECK_MSG(strstr(tdm_last_error(), bad[i].tok) != NULL, "case %zu: \"%s\" does not name %s", i,
                  tdm_last_error(), bad[i].tok);
    }
    /* the same in tokenizer.json's model.vocab */
    snprintf(dir, sizeof dir, "%s/ids-json", tmpdir);
    mkdir(dir, 0700);
    write_file(dir, "tokenizer.json",
               "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 2147483647}, \"merges\": []}}");
    expect_load_error(dir, TDM_ERR_FORMAT, "tokenizer.json");
    CHECK(strstr(tdm_last_error(), "model.vocab") && strstr(tdm_last_error(), "\"b\""));
    /* an added token outside the vocabulary may not take a vocabulary id, nor
     * another added token's */
    snprintf(dir, sizeof dir, "%s/ids-added", tmpdir);
    write_tiny_json(dir, "BPE", "[]", "[{\"id\": 3, \"content\": \"<x>\"}]");
    expect_load_error(dir, TDM_ERR_FORMAT, "tokenizer.json");
    CHECK(strstr(tdm_last_error(), "\"<x>\"") && strstr(tdm_last_error(), "\"a</w>\""));
    write_tiny_json(dir, "BPE", "[]", "[{\"id\": 12, \"content\": \"<x>\"}, {\"id\": 12, \"content\": \"<y>\"}]");
    expect_load_error(dir, TDM_ERR_FORMAT, "tokenizer.json");
    CHECK(strstr(tdm_last_error(), "\"<y>\"") != NULL);
    write_tiny_json(dir, "BPE", "[]", "[{\"id\": 2147483647, \"content\": \"<x>\"}]");
    expect_load_error(dir, TDM_ERR_FORMAT, "tokenizer.json");
    /* a valid added id past the vocabulary loads */
    write_tiny_json(dir, "BPE", "[]", "[{\"id\": 10, \"content\": \"<x>\"}]");
    tdm_clip_tok_t *t = NULL;
    CHECK_MSG(tdm_clip_tok_load(&t, dir) == TDM_OK, "%s", tdm_last_error());
    if (t) CHECK(tdm_clip_tok_vocab_size(t) == 11);
    tdm_clip_tok_free(t);
    /* malformed merges.txt lines name the line */
    static const char *merges[] = {"#version: 0.2\na b\na\n", "#version: 0.2\na \n", "#version: 0.2\n b\n",
                                   "#version: 0.2\na\tb\n", "#version: 0.2\na b \n"};
    for (size_t i = 0; i < sizeof merges / sizeof merges[0]; i++) {
        snprintf(dir, sizeof dir, "%s/merges-%zu", tmpdir, i);
        make_tiny(dir, TINY_VOCAB, merges[i]);
        expect_load_error(dir, TDM_ERR_FORMAT, "merges.txt");
        CHECK_MSG(strstr(tdm_last_error(), "line ") != NULL, "case %zu: %s", i, tdm_last_error());
    }
    /* CRLF line ends are fine */
    snprintf(dir, sizeof dir, "%s/merges-crlf", tmpdir);
    make_tiny(dir, TINY_VOCAB, "#version: 0.2\r\na b\r\nab c</w>\r\n");
    CHECK_MSG(tdm_clip_tok_load(&t, dir) == TDM_OK, "%s", tdm_last_error());
    tdm_clip_tok_free(t);
}

TEST(tokenizer_json_tiny) {
    char dir[300];
    static const char *merge_forms[2] = {"[\"a b\", \"ab c</w>\"]", "[[\"a\", \"b\"], [\"ab\", \"c</w>\"]]"};
    for (int f = 0; f < 2; f++) {
        snprintf(dir, sizeof dir, "%s/json-tiny-%d", tmpdir, f);
        write_tiny_json(dir, "BPE", merge_forms[f], TINY_ADDED);
        tdm_clip_tok_t *t = NULL;
        CHECK_MSG(tdm_clip_tok_load(&t, dir) == TDM_OK, "%s", tdm_last_error());
        if (!t) continue;
        CHECK(tdm_clip_tok_max_length(t) == 77 && tdm_clip_tok_vocab_size(t) == 10);
        CHECK(tdm_clip_tok_bos_id(t) == 8 && tdm_clip_tok_eos_id(t) == 9 && tdm_clip_tok_pad_id(t) == 9);
        int32_t ids[8];
        CHECK(tdm_clip_tok_encode(t, "ABC ab", ids, 8) == TDM_OK);
        CHECK(ids[0] == 8 && ids[1] == 7 && ids[2] == 0 && ids[3] == 4 && ids[4] == 9 && ids[7] == 9);
        /* tokenizer.json's added tokens are "normalized": matched after lower-casing
         * (special tokens left to their defaults keep those flags) */
        CHECK(tdm_clip_tok_encode(t, "<|ENDOFTEXT|>c", ids, 8) == TDM_OK);
        CHECK(ids[1] == 9 && ids[2] == 5 && ids[3] == 9);
        tdm_clip_tok_free(t);
    }

    /* vocab.json + merges.txt win over tokenizer.json's model (here one without
     * the "ab c</w>" merge). That is tandem's rule: transformers 5 would take
     * tokenizer.json's model; real folders hold the same model in both.
     * tokenizer.json's added tokens still give their flags, over
     * special_tokens_map.json's, as in transformers. unk "c</w>" (id 5) tells a
     * matched "<|endoftext|>" (9) from one split into unknown bytes (5 5 ...). */
    snprintf(dir, sizeof dir, "%s/json-and-vocab", tmpdir);
    make_tiny(dir, TINY_VOCAB, TINY_MERGES);
    write_tiny_json(dir, "BPE", "[\"a b\"]", TINY_ADDED);
    write_file(dir, "tokenizer_config.json", "{\"unk_token\": \"c</w>\"}");
    write_file(dir, "special_tokens_map.json",
               "{\"eos_token\": {\"content\": \"<|endoftext|>\", \"normalized\": false}}");
    tdm_clip_tok_t *t = NULL;
    int32_t ids[12];
    CHECK_MSG(tdm_clip_tok_load(&t, dir) == TDM_OK, "%s", tdm_last_error());
    if (t) {
        CHECK(tdm_clip_tok_encode(t, "abc <|EndOfText|>", ids, 8) == TDM_OK);
        CHECK_MSG(ids[1] == 7 && ids[2] == 9 && ids[3] == 9, "ids %d %d %d", ids[1], ids[2], ids[3]);
        tdm_clip_tok_free(t);
    }
    /* with added_tokens_decoder in the config, tokenizer.json's added tokens
     * are not read, and the decoder's flags override the eos_token object's */
    write_file(dir, "tokenizer_config.json",
               "{\"added_tokens_decoder\": {\"9\": {\"content\": \"<|endoftext|>\", \"normalized\": false, "
               "\"special\": true}}, \"eos_token\": {\"content\": \"<|endoftext|>\", \"normalized\": true}, "
               "\"unk_token\": \"c</w>\"}");
    CHECK_MSG(tdm_clip_tok_load(&t, dir) == TDM_OK, "%s", tdm_last_error());
    if (t) {
        CHECK(tdm_clip_tok_encode(t, "<|EndOfText|>", ids, 12) == TDM_OK);
        CHECK_MSG(ids[1] == 5 && ids[2] == 5, "ids %d %d", ids[1], ids[2]);
        CHECK(tdm_clip_tok_encode(t, "<|endoftext|>", ids, 12) == TDM_OK);
        CHECK(ids[1] == 9);
        tdm_clip_tok_free(t);
    }
}

TEST(tokenizer_json_errors) {
    char dir[300];
    snprintf(dir, sizeof dir, "%s/json-wordpiece", tmpdir);
    write_tiny_json(dir, "WordPiece", "[]", TINY_ADDED);
    expect_load_error(dir, TDM_ERR_UNSUPPORTED, "tokenizer.json");
    CHECK(strstr(tdm_last_error(), "WordPiece") != NULL);

    snprintf(dir, sizeof dir, "%s/json-no-type-no-merges", tmpdir);
    mkdir(dir, 0700);
    write_file(dir, "tokenizer.json", "{\"model\": {\"vocab\": {\"a\": 0}}}");
    expect_load_error(dir, TDM_ERR_UNSUPPORTED, "tokenizer.json");

    snprintf(dir, sizeof dir, "%s/json-no-type", tmpdir);  /* old files: BPE without "type" */
    mkdir(dir, 0700);
    write_file(dir, "tokenizer.json",
               "{\"model\": {\"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, \"merges\": [\"a b\"]}}");
    tdm_clip_tok_t *t = NULL;
    CHECK_MSG(tdm_clip_tok_load(&t, dir) == TDM_OK, "%s", tdm_last_error());
    tdm_clip_tok_free(t);

    snprintf(dir, sizeof dir, "%s/json-merge-unknown", tmpdir);
    write_tiny_json(dir, "BPE", "[\"a b\", \"a q\"]", TINY_ADDED);
    expect_load_error(dir, TDM_ERR_FORMAT, "tokenizer.json");
    CHECK(strstr(tdm_last_error(), "model.merges[1]") != NULL && strstr(tdm_last_error(), "\"q\"") != NULL);

    snprintf(dir, sizeof dir, "%s/json-merge-3-parts", tmpdir);
    write_tiny_json(dir, "BPE", "[\"a b c\"]", TINY_ADDED);
    expect_load_error(dir, TDM_ERR_FORMAT, "tokenizer.json");

    snprintf(dir, sizeof dir, "%s/json-merge-bad-pair", tmpdir);
    write_tiny_json(dir, "BPE", "[[\"a\", \"b\"], [\"a\"]]", TINY_ADDED);
    expect_load_error(dir, TDM_ERR_FORMAT, "tokenizer.json");
    CHECK(strstr(tdm_last_error(), "model.merges[1]") != NULL);

    snprintf(dir, sizeof dir, "%s/json-merges-object", tmpdir);
    write_tiny_json(dir, "BPE", "{}", TINY_ADDED);
    expect_load_error(dir, TDM_ERR_FORMAT, "tokenizer.json");

    snprintf(dir, sizeof dir, "%s/json-vocab-list", tmpdir);
    mkdir(dir, 0700);
    write_file(dir, "tokenizer.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": [\"a\"], \"merges\": []}}");
    expect_load_error(dir, TDM_ERR_FORMAT, "tokenizer.json");

    snprintf(dir, sizeof dir, "%s/json-no-model", tmpdir);
    mkdir(dir, 0700);
    write_file(dir, "tokenizer.json", "{\"version\": \"1.0\"}");
    expect_load_error(dir, TDM_ERR_FORMAT, "tokenizer.json");

    snprintf(dir, sizeof dir, "%s/json-bad-added", tmpdir);
    write_tiny_json(dir, "BPE", "[]", "{}");
    expect_load_error(dir, TDM_ERR_FORMAT, "tokenizer.json");

    snprintf(dir, sizeof dir, "%s/json-added-no-id", tmpdir);
    write_tiny_json(dir, "BPE", "[]", "[{\"content\": \"<|endoftext|>\"}]");
    expect_load_error(dir, TDM_ERR_FORMAT, "tokenizer.json");

    /* a malformed tokenizer.json fails the load even next to vocab.json + merges.txt */
    snprintf(dir, sizeof dir, "%s/json-malformed", tmpdir);
    make_tiny(dir, TINY_VOCAB, TINY_MERGES);
    write_file(dir, "tokenizer.json", "{\"model\": ");
    expect_load_error(dir, TDM_ERR_FORMAT, "tokenizer.json");

    /* vocab.json without merges.txt, and no tokenizer.json */
    snprintf(dir, sizeof dir, "%s/json-none", tmpdir);
    mkdir(dir, 0700);
    write_file(dir, "vocab.json", TINY_VOCAB);
    expect_load_error(dir, TDM_ERR_IO, dir);
    CHECK(strstr(tdm_last_error(), "tokenizer.json") && strstr(tdm_last_error(), "merges.txt is missing"));
}

TEST(special_token_config) {
    char dir[300];
    snprintf(dir, sizeof dir, "%s/cfg", tmpdir);
    make_tiny(dir, TINY_VOCAB, TINY_MERGES);
    /* tokenizer_config.json with added_tokens_decoder: special_tokens_map.json is ignored */
    write_file(dir, "tokenizer_config.json",
               "{\"added_tokens_decoder\": {\"8\": {\"content\": \"<|startoftext|>\", \"normalized\": true, "
               "\"special\": true}, \"9\": {\"content\": \"<|endoftext|>\", \"normalized\": false, "
               "\"special\": true}}, \"bos_token\": \"<|startoftext|>\", \"eos_token\": \"<|endoftext|>\", "
               "\"pad_token\": \"<|endoftext|>\", \"model_max_length\": 12}");
    write_file(dir, "special_tokens_map.json", "{\"pad_token\": \"a\"}");
    tdm_clip_tok_t *t = NULL;
    CHECK_MSG(tdm_clip_tok_load(&t, dir) == TDM_OK, "%s", tdm_last_error());
    if (!t) return;
    CHECK(tdm_clip_tok_max_length(t) == 12);
    CHECK(tdm_clip_tok_pad_id(t) == 9);
    int32_t ids[12];
    /* BOS is matched after lower-casing, EOS only verbatim */
    CHECK(tdm_clip_tok_encode(t, "<|StartOfText|><|endoftext|>", ids, 12) == TDM_OK);
    CHECK(ids[1] == 8 && ids[2] == 9 && ids[3] == 9);
    tdm_clip_tok_free(t);

    /* no added_tokens_decoder: special_tokens_map.json overrides the config */
    write_file(dir, "tokenizer_config.json", "{\"pad_token\": \"<|endoftext|>\"}");
    write_file(dir, "special_tokens_map.json", "{\"pad_token\": {\"content\": \"a\"}}");
    CHECK_MSG(tdm_clip_tok_load(&t, dir) == TDM_OK, "%s", tdm_last_error());
    if (!t) return;
    CHECK(tdm_clip_tok_pad_id(t) == 0);
    /* pad "a" is a special token matched on the raw text, so "ab" is a + b</w> */
    CHECK(tdm_clip_tok_encode(t, "ab", ids, 6) == TDM_OK);
    CHECK(ids[1] == 0 && ids[2] == 4 && ids[3] == 9 && ids[4] == 0 && ids[5] == 0);
    tdm_clip_tok_free(t);
}

/* ---- BPE against a plain reference ------------------------------------- */

/* The textbook BPE the tokenizer once ran (quadratic in the word length):
 * a word's symbols as strings; repeatedly merge the adjacent pair of lowest
 * merge rank, leftmost first. Vocabulary and merges sit in sorted arrays. */
typedef struct { char *key; int32_t val; } ref_ent_t;
typedef struct {
    ref_ent_t *vocab, *merges;   /* token -> id; "a b" -> rank */
    int64_t nvocab, nmerges;
} ref_bpe_t;

static int ref_cmp(const void *a, const void *b) {
    return strcmp(((const ref_ent_t *)a)->key, ((const ref_ent_t *)b)->key);
}

static int32_t ref_get(const ref_ent_t *a, int64_t n, const char *key) {
    ref_ent_t k = {(char *)key, 0};
    const ref_ent_t *r = bsearch(&k, a, (size_t)n, sizeof k, ref_cmp);
    return r ? r->val : -1;
}

static void ref_add_merge(ref_bpe_t *r, const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    char *k = malloc(la + lb + 2);
    memcpy(k, a, la);
    k[la] = ' ';
    memcpy(k + la + 1, b, lb + 1);
    r->merges[r->nmerges].key = k;
    r->merges[r->nmerges].val = (int32_t)r->nmerges;
    r->nmerges++;
}

/* Loads vocab.json + merges.txt, or tokenizer.json, of `dir`. Returns 0 when
 * neither can be read. Merges are unique in the fixtures, so a sorted array
 * of "a b" keys gives each its rank. */
static int ref_load(ref_bpe_t *r, const char *dir) {
    char p[600];
    memset(r, 0, sizeof *r);
    snprintf(p, sizeof p, "%s/vocab.json", dir);
    char *vtext = test_slurp(p);
    cJSON *vocab = NULL, *tj = NULL;
    const cJSON *mlist = NULL;
    char *mtext = NULL;
    if (vtext) {
        vocab = cJSON_Parse(vtext);
        snprintf(p, sizeof p, "%s/merges.txt", dir);
        mtext = test_slurp(p);
    } else {
        snprintf(p, sizeof p, "%s/tokenizer.json", dir);
        char *text = test_slurp(p);
        tj = text ? cJSON_Parse(text) : NULL;
        free(text);
        const cJSON *model = cJSON_GetObjectItem(tj, "model");
        mlist = cJSON_GetObjectItem(model, "merges");
        vocab = cJSON_Duplicate(cJSON_GetObjectItem(model, "vocab"), 1);
    }
    free(vtext);
    if (!vocab || (!mtext && !mlist)) { cJSON_Delete(vocab); cJSON_Delete(tj); free(mtext); return 0; }
    r->vocab = malloc((size_t)cJSON_GetArraySize(vocab) * sizeof *r->vocab);
    for (const cJSON *e = vocab->child; e; e = e->next) {
        r->vocab[r->nvocab].key = strdup(e->string);
        r->vocab[r->nvocab++].val = e->valueint;
    }
    int64_t cap = mlist ? cJSON_GetArraySize(mlist) : 1;
    if (mtext) for (char *c = mtext; *c; c++) cap += *c == '\n';
    r->merges = malloc((size_t)cap * sizeof *r->merges);
    if (mtext) {
        for (char *line = strtok(mtext, "\n"); line; line = strtok(NULL, "\n")) {
            if (strncmp(line, "#version", 8) == 0) continue;
            char *sp = strchr(line, ' ');
            *sp = 0;
            ref_add_merge(r, line, sp + 1);
        }
    } else {
        for (const cJSON *m = mlist->child; m; m = m->next) {
            if (cJSON_IsArray(m)) {
                ref_add_merge(r, m->child->valuestring, m->child->next->valuestring);
            } else {
                char *line = strdup(m->valuestring), *sp = strchr(line, ' ');
                *sp = 0;
                ref_add_merge(r, line, sp + 1);
                free(line);
            }
        }
    }
    qsort(r->vocab, (size_t)r->nvocab, sizeof *r->vocab, ref_cmp);
    qsort(r->merges, (size_t)r->nmerges, sizeof *r->merges, ref_cmp);
    cJSON_Delete(vocab);
    cJSON_Delete(tj);
    free(mtext);
    return 1;
}

static void ref_free(ref_bpe_t *r) {
    for (int64_t i = 0; i < r->nvocab; i++) free(r->vocab[i].key);
    for (int64_t i = 0; i < r->nmerges; i++) free(r->merges[i].key);
    free(r->vocab);
    free(r->merges);
}

/* Ids of one word of printable ASCII (each byte is its own GPT-2 symbol),
 * appended to ids[*n..cap). */
static void ref_word(const ref_bpe_t *r, const char *w, int32_t *ids, int *n, int cap) {
    int m = (int)strlen(w);
    char **sym = malloc((size_t)m * sizeof *sym);
    for (int i = 0; i < m; i++) {
        sym[i] = malloc(8);
        snprintf(sym[i], 8, "%c%s", w[i], i == m - 1 ? "</w>" : "");
    }
    char key[1024];
    for (;;) {
        int best = -1;
        int32_t br = INT32_MAX;
        for (int i = 0; i + 1 < m; i++) {
            snprintf(key, sizeof key, "%s %s", sym[i], sym[i + 1]);
            int32_t rk = ref_get(r->merges, r->nmerges, key);
            if (rk >= 0 && rk < br) { br = rk; best = i; }
        }
        if (best < 0) break;
        size_t la = strlen(sym[best]), lb = strlen(sym[best + 1]);
        char *j = malloc(la + lb + 1);
        memcpy(j, sym[best], la);
        memcpy(j + la, sym[best + 1], lb + 1);
        free(sym[best]);
        free(sym[best + 1]);
        sym[best] = j;
        memmove(sym + best + 1, sym + best + 2, (size_t)(m - best - 2) * sizeof *sym);
        m--;
    }
    for (int i = 0; i < m; i++) {
        if (*n < cap) ids[(*n)++] = ref_get(r->vocab, r->nvocab, sym[i]);
        free(sym[i]);
    }
    free(sym);
}

static uint64_t rng_next(uint64_t *s) {
    *s ^= *s << 13; *s ^= *s >> 7; *s ^= *s << 17;
    return *s;
}

/* A random word: random letters, a run of one letter (ties between equal
 * pairs), a concatenation of vocabulary tokens (long merge chains), or
 * punctuation (CLIP's [^\s\p{L}\p{N}]+ class; no ' < | >, which start
 * contractions and special tokens, and no "!", the SD2 pad token). */
static void rand_word(const ref_bpe_t *r, uint64_t *rs, char *w, int maxlen) {
    static const char punct[] = "#$%&()*+,-./:;=?@[]^_`{}~\"\\";
    int len = 1 + (int)(rng_next(rs) % (uint64_t)maxlen), kind = (int)(rng_next(rs) % 4), n = 0;
    if (kind == 0) {
        while (n < len) w[n++] = (char)('a' + rng_next(rs) % (1 + rng_next(rs) % 26));
    } else if (kind == 1) {
        char c = (char)('a' + rng_next(rs) % 26);
        while (n < len) w[n++] = c;
    } else if (kind == 2) {
        while (n < len) {
            const char *tok = r->vocab[rng_next(rs) % (uint64_t)r->nvocab].key;
            int ok = 1;
            size_t k = 0;
            for (; tok[k] && ok; k++) ok = tok[k] >= 'a' && tok[k] <= 'z';
            if (!ok && strcmp(tok + k - 1, "</w>") != 0) continue;
            for (size_t i = 0; tok[i] >= 'a' && tok[i] <= 'z' && n < len; i++) w[n++] = tok[i];
        }
    } else {
        while (n < len) w[n++] = punct[rng_next(rs) % (sizeof punct - 1)];
    }
    w[n] = 0;
}

/* The heap BPE gives the reference's ids on random words, alone and as a
 * prompt of many words cut at L - 2 tokens. */
static void bpe_differential(const char *dir, int nwords) {
    ref_bpe_t r;
    CHECK_MSG(ref_load(&r, dir), "cannot read the vocabulary of %s", dir);
    if (!r.nvocab) return;
    tdm_clip_tok_t *t = NULL;
    CHECK_MSG(tdm_clip_tok_load(&t, dir) == TDM_OK, "%s", tdm_last_error());
    if (!t) { ref_free(&r); return; }
    int32_t bos = tdm_clip_tok_bos_id(t), eos = tdm_clip_tok_eos_id(t), pad = tdm_clip_tok_pad_id(t);
    uint64_t rs = 0x9E3779B97F4A7C15ull;
    enum { L = 160, MAXW = 120 };
    int32_t got[L], want[L];
    char w[MAXW + 8], prompt[24 * (MAXW + 1) + 1];
    int bad = 0;
    for (int k = 0; k < nwords && bad < 5; k++) {
        rand_word(&r, &rs, w, k % 10 == 0 ? MAXW : 24);
        int n = 1;
        want[0] = bos;
        ref_word(&r, w, want, &n, L - 1);
        want[n++] = eos;
        while (n < L) want[n++] = pad;
        CHECK(tdm_clip_tok_encode(t, w, got, L) == TDM_OK);
        if (memcmp(got, want, sizeof got) != 0) {
            int i = 0;
            while (got[i] == want[i]) i++;
            printf("  %s: \"%s\": id[%d] = %d, reference %d\n", dir, w, i, got[i], want[i]);
            bad++;
        }
    }
    /* prompts of 1..24 words at L = 77: truncation to 75 tokens, then EOS, then pad */
    for (int k = 0; k < nwords / 8 && bad < 5; k++) {
        int nw = 1 + (int)(rng_next(&rs) % 24), n = 1, pl = 0;
        want[0] = bos;
        for (int i = 0; i < nw; i++) {
            rand_word(&r, &rs, w, 16);
            ref_word(&r, w, want, &n, 76);
            pl += snprintf(prompt + pl, sizeof prompt - (size_t)pl, "%s%s", i ? " " : "", w);
        }
        want[n++] = eos;
        while (n < 77) want[n++] = pad;
        CHECK(tdm_clip_tok_encode(t, prompt, got, 77) == TDM_OK);
        if (memcmp(got, want, 77 * sizeof *got) != 0) {
            int i = 0;
            while (got[i] == want[i]) i++;
            printf("  %s: prompt \"%.60s...\": id[%d] = %d, reference %d\n", dir, prompt, i, got[i], want[i]);
            bad++;
        }
    }
    CHECK_MSG(bad == 0, "%s: %d encodings differ from the reference BPE", dir, bad);
    tdm_clip_tok_free(t);
    ref_free(&r);
}

TEST(bpe_vs_reference_full_vocab) { bpe_differential(VOCAB_DIR, 2000); }
TEST(bpe_vs_reference_json_only) { bpe_differential(JSON_ONLY_DIR, 2000); }

/* A 1 MB prompt, one word or many, tokenizes in well under a second (the
 * bound is generous for sanitizer builds); it took minutes when BPE was
 * quadratic in the word length. CPU time, so a loaded machine does not
 * fail the test. */
static double cpu_seconds(void) { return (double)clock() / CLOCKS_PER_SEC; }

TEST(long_prompts_fast) {
    const char *dir = have_vocab() ? VOCAB_DIR : JSON_ONLY_DIR;
    tdm_clip_tok_t *t = NULL;
    CHECK_MSG(tdm_clip_tok_load(&t, dir) == TDM_OK, "%s", tdm_last_error());
    if (!t) return;
    const size_t n = 1 << 20;
    char *s = malloc(n + 1);
    int32_t ids[77];
    for (int mode = 0; mode < 4; mode++) {
        for (size_t i = 0; i < n; i++) {
            char c = (char)('a' + (i * 7 + i / 3) % 26);
            s[i] = mode == 0 ? c : mode == 1 ? 'a' : mode == 2 ? (i % 6 == 5 ? ' ' : c) : "!?.,"[i % 4];
        }
        s[n] = 0;
        double t0 = cpu_seconds();
        tdm_status st = tdm_clip_tok_encode(t, s, ids, 77);
        double dt = cpu_seconds() - t0;
        static const char *what[4] = {"one word of mixed letters", "one word of 'a'", "many words",
                                      "one word of punctuation"};
        CHECK_MSG(st == TDM_OK, "%s: %s", what[mode], tdm_last_error());
        CHECK_MSG(dt < 5.0, "1 MB prompt, %s: %.2f s of CPU time", what[mode], dt);
        CHECK(ids[0] == tdm_clip_tok_bos_id(t) && ids[76] == tdm_clip_tok_eos_id(t));
    }
    /* the same beginning as a short prompt with the same first 75 tokens */
    for (size_t i = 0; i < n; i++) s[i] = i % 6 == 5 ? ' ' : (char)('a' + (i * 7 + i / 3) % 26);
    int32_t short_ids[77];
    s[600] = 0;
    CHECK(tdm_clip_tok_encode(t, s, short_ids, 77) == TDM_OK);
    s[600] = 'x';
    s[n] = 0;
    for (size_t i = 600; i < n; i++) s[i] = i % 6 == 5 ? ' ' : (char)('a' + (i * 7 + i / 3) % 26);
    CHECK(tdm_clip_tok_encode(t, s, ids, 77) == TDM_OK);
    CHECK(memcmp(ids, short_ids, sizeof ids) == 0);
    free(s);
    tdm_clip_tok_free(t);
}

/* A long run of combining marks in descending class order (each once moved
 * past every mark before it) normalizes in linear time, and in the right
 * order: U+0316 (class 220) sorts before U+0301 (230). */
TEST(combining_marks_fast) {
    char dir[300];
    snprintf(dir, sizeof dir, "%s/tiny-marks", tmpdir);
    make_tiny(dir, TINY_VOCAB, TINY_MERGES);
    tdm_clip_tok_t *t = NULL;
    CHECK_MSG(tdm_clip_tok_load(&t, dir) == TDM_OK, "%s", tdm_last_error());
    if (!t) return;
    const size_t k = 200000;
    char *s = malloc(4 * k + 8);
    size_t n = 0;
    s[n++] = 'b';
    for (size_t i = 0; i < k; i++) { s[n++] = (char)0xCC; s[n++] = (char)0x81; }
    for (size_t i = 0; i < k; i++) { s[n++] = (char)0xCC; s[n++] = (char)0x96; }
    s[n] = 0;
    int32_t ids[8];
    double t0 = cpu_seconds();
    CHECK(tdm_clip_tok_encode(t, s, ids, 8) == TDM_OK);
    double dt = cpu_seconds() - t0;
    CHECK_MSG(dt < 5.0, "%zu combining marks: %.2f s of CPU time", 2 * k, dt);
    CHECK(ids[1] == 4);   /* "b</w>" (marks are no letters), then the marks' bytes (unk) */
    free(s);
    tdm_clip_tok_free(t);
}

/* Without arguments: every case that needs only committed fixtures. With
 * --full-vocab (its own ctest entry): the full-vocabulary cases, skipped
 * (exit 77) when tests/fixtures/clip-vocab/ has not been fetched. */
int main(int argc, char **argv) {
    const int full = argc == 2 && !strcmp(argv[1], "--full-vocab");
    if (argc > 1 && !full) { printf("usage: %s [--full-vocab]\n", argv[0]); return EXIT_FAILURE; }
    if (full && !have_vocab())
        return test_skip("the full CLIP vocabulary (" VOCAB_DIR ") is missing: `make vocab` fetches "
                         "it from PyPI (tools/fetch_clip_vocab.sh)");
    snprintf(tmpdir, sizeof tmpdir, "/tmp/tdm_test_clip_tok_XXXXXX");
    if (!mkdtemp(tmpdir)) { printf("cannot create a temporary folder\n"); return EXIT_FAILURE; }
    if (full) {
        RUN(golden_full_vocab);
        RUN(golden_full_vocab_json);
        RUN(accessors_full_vocab);
        RUN(bpe_vs_reference_full_vocab);
    } else {
        RUN(golden_json_only);
        RUN(tiny_vocab_bpe);
        RUN(invalid_utf8);
        RUN(bad_files);
        RUN(tokenizer_json_tiny);
        RUN(tokenizer_json_errors);
        RUN(vocab_ids);
        RUN(special_token_config);
        RUN(bpe_vs_reference_json_only);
        RUN(long_prompts_fast);
        RUN(combining_marks_fast);
    }
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) printf("note: could not remove %s\n", tmpdir);
    return test_summary();
}
