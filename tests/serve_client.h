/* serve_client.h — what the serve tests share (test_serve.c,
 * test_serve_launch.c): starting `tandem serve` (alone or under tandem
 * launch) and stopping it, a minimal HTTP client on a socket, JSON and
 * base64 helpers, and the comparison with `tandem generate`'s PNGs.
 * Include after test.h, with the socket and process headers. */
#ifndef TDM_TEST_SERVE_CLIENT_H
#define TDM_TEST_SERVE_CLIENT_H

static const char *MODEL = TDM_FIXTURES "/pipelines/sd15-tiny";
static const char *g_src;   /* the client's source address (NULL: any) */
static char g_tmp[] = "/tmp/tdm-test-serve-XXXXXX";

typedef struct {
    pid_t pid;
    int   port;
} server_t;

/* Starts `tandem serve --model MODEL --port 0 <args...>` (NULL-terminated)
 * — under `tandem launch -n RANKS --oversubscribe` when ranks > 0 — and
 * reads the port from its first stdout line. 0 on success. */
static inline int server_start_ranks(server_t *s, int ranks, const char *const *args) {
    int fd[2];
    char np[16];
    const char *argv[48] = {TDM_TANDEM_BIN};
    int n = 1;
    if (ranks > 0) {
        snprintf(np, sizeof np, "%d", ranks);
        const char *l[] = {"launch", "-n", np, "--oversubscribe", "--"};
        for (int i = 0; i < 5; i++) argv[n++] = l[i];
    }
    const char *serve[] = {"serve", "--model", MODEL, "--port", "0", "--quiet"};
    for (int i = 0; i < 6; i++) argv[n++] = serve[i];
    for (int i = 0; args && args[i] && n < 47; i++) argv[n++] = args[i];
    argv[n] = NULL;
    if (pipe(fd)) return -1;
    s->pid = fork();
    if (s->pid < 0) return -1;
    if (s->pid == 0) {
        setpgid(0, 0);   /* its own group: a server that will not stop is killed whole */
        dup2(fd[1], 1);
        close(fd[0]);
        close(fd[1]);
        execv(TDM_TANDEM_BIN, (char *const *)argv);
        _exit(127);
    }
    close(fd[1]);
    char line[512];
    size_t len = 0;
    while (len + 1 < sizeof line) {   /* one line, byte by byte (the rest of stdout is unused) */
        ssize_t r = read(fd[0], line + len, 1);
        if (r <= 0 || line[len] == '\n') break;
        len++;
    }
    line[len] = 0;
    close(fd[0]);
    const char *colon = strrchr(line, ':');
    s->port = colon && strstr(line, "serving") ? atoi(colon + 1) : 0;
    CHECK_MSG(s->port > 0, "no \"serving ... on http://HOST:PORT\" line: \"%s\"", line);
    return s->port > 0 ? 0 : -1;
}

static inline int server_start(server_t *s, const char *const *args) { return server_start_ranks(s, 0, args); }

/* SIGTERM, then the exit code (-1 when it did not end within 60 s). */
static inline int server_stop(server_t *s) {
    int st = 0;
    kill(s->pid, SIGTERM);
    for (int i = 0; i < 600; i++) {
        if (waitpid(s->pid, &st, WNOHANG) == s->pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
        usleep(100000);
    }
    kill(-s->pid, SIGKILL);   /* with launch's mpirun and ranks */
    waitpid(s->pid, &st, 0);
    return -1;
}

typedef struct {
    int    status;
    char  *head, *body;   /* malloc'd, NUL-terminated */
    size_t len;           /* body bytes */
} resp_t;

static inline void resp_free(resp_t *r) {
    free(r->head);
    free(r->body);
    memset(r, 0, sizeof *r);
}

/* One request over a new connection (HTTP/1.0: the answer ends at EOF). */
static inline int http(const server_t *s, const char *method, const char *path, const char *hdrs,
                const char *body, size_t blen, resp_t *r) {
    memset(r, 0, sizeof *r);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)s->port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    struct timeval tv = {120, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in src = {.sin_family = AF_INET};
    if (g_src && fd >= 0) {   /* another loopback address: another client */
        inet_pton(AF_INET, g_src, &src.sin_addr);
        if (bind(fd, (struct sockaddr *)&src, sizeof src)) {
            close(fd);
            return -1;
        }
    }
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a)) {
        if (fd >= 0) close(fd);
        return -1;
    }
    char req[1024];
    int hl = snprintf(req, sizeof req, "%s %s HTTP/1.0\r\nHost: 127.0.0.1\r\n%sContent-Length: %zu\r\n"
                      "Content-Type: application/json\r\n\r\n", method, path, hdrs ? hdrs : "",
                      body ? blen : 0);
    if (write(fd, req, (size_t)hl) != hl) {
        close(fd);
        return -1;
    }
    for (size_t off = 0; body && off < blen;) {
        ssize_t w = write(fd, body + off, blen - off);
        if (w <= 0) break;
        off += (size_t)w;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (n + 4096 > cap) buf = realloc(buf, cap *= 2);
        ssize_t k = read(fd, buf + n, cap - n - 1);
        if (k <= 0) break;
        n += (size_t)k;
    }
    close(fd);
    buf[n] = 0;
    char *sep = strstr(buf, "\r\n\r\n");
    if (!sep || sscanf(buf, "HTTP/1.%*d %d", &r->status) != 1) {
        free(buf);
        return -1;
    }
    const size_t h = (size_t)(sep - buf);
    r->head = strndup(buf, h);
    r->len = n - h - 4;
    r->body = malloc(r->len + 1);
    memcpy(r->body, sep + 4, r->len);
    r->body[r->len] = 0;
    free(buf);
    return 0;
}

static inline cJSON *http_json(const server_t *s, const char *method, const char *path, const char *body,
                        int want) {
    resp_t r;
    cJSON *o = NULL;
    if (http(s, method, path, NULL, body, body ? strlen(body) : 0, &r)) {
        CHECK_MSG(0, "%s %s: no answer", method, path);
        return NULL;
    }
    CHECK_MSG(r.status == want, "%s %s: status %d, want %d: %s", method, path, r.status, want, r.body);
    o = cJSON_Parse(r.body);
    CHECK_MSG(o != NULL, "%s %s: not JSON: %s", method, path, r.body);
    resp_free(&r);
    return o;
}

static inline const char *jstr(const cJSON *o, const char *k) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(x) ? x->valuestring : "";
}

/* Polls job id until it ends (`seconds` at most); its final JSON. */
static inline cJSON *wait_job_s(const server_t *s, const char *id, int seconds) {
    char path[128];
    snprintf(path, sizeof path, "/v1/jobs/%s", id);
    for (int i = 0; i < seconds * 10; i++) {
        cJSON *o = http_json(s, "GET", path, NULL, 200);
        const char *st = jstr(o, "state");
        if (!o || (strcmp(st, "queued") && strcmp(st, "running"))) return o;
        cJSON_Delete(o);
        usleep(100000);
    }
    CHECK_MSG(0, "job %s did not end in %d s", id, seconds);
    return NULL;
}

static inline cJSON *wait_job(const server_t *s, const char *id) { return wait_job_s(s, id, 60); }

static inline const uint8_t *b64val(int c) {
    static uint8_t t[256];
    static int init;
    if (!init) {
        const char *a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        memset(t, 255, sizeof t);
        for (int i = 0; i < 64; i++) t[(unsigned char)a[i]] = (uint8_t)i;
        init = 1;
    }
    return &t[(unsigned char)c];
}

/* Decoded base64 (malloc'd). */
static inline uint8_t *unb64(const char *s, size_t *len) {
    size_t n = strlen(s), k = 0;
    uint8_t *o = malloc(n / 4 * 3 + 3);
    uint32_t v = 0;
    int bits = 0;
    for (size_t i = 0; i < n && s[i] != '='; i++) {
        const uint8_t d = *b64val(s[i]);
        if (d == 255) continue;
        v = v << 6 | d;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            o[k++] = (uint8_t)(v >> bits);
        }
    }
    *len = k;
    return o;
}

/* `tandem generate` of the same request: OUT/000000.png ... in g_tmp/name. */
static inline void cli_images(const char *name, const char *extra) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "\"%s\" generate --model \"%s\" --out \"%s/%s\" --quiet %s >/dev/null 2>&1",
             TDM_TANDEM_BIN, MODEL, g_tmp, name, extra);
    CHECK_MSG(system(cmd) == 0, "%s failed", cmd);
}

/* Image k of job id equals CLI image `file` byte for byte. */
static inline void same_png(const server_t *s, const char *id, int k, const char *file) {
    char path[256];
    long n = 0;
    resp_t r;
    snprintf(path, sizeof path, "/v1/jobs/%s/images/%d.png", id, k);
    CHECK(http(s, "GET", path, NULL, NULL, 0, &r) == 0 && r.status == 200);
    CHECK(r.head && strstr(r.head, "image/png"));
    char *want = test_slurp_len(file, &n);
    CHECK_MSG(want && (size_t)n == r.len && !memcmp(want, r.body, n), "%s (%zu bytes) differs from %s "
              "(%zu bytes)", path, r.len, file, n);
    free(want);
    resp_free(&r);
}


/* Seconds on the monotonic clock. */
static inline double mono(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Before the tests: 77 (skip) when this build has no tandem serve, 1 when
 * g_tmp cannot be made, else 0. */
static inline int serve_test_setup(void) {
    char probe[1024], out[512] = "";
    snprintf(probe, sizeof probe, "\"%s\" serve --model /nonexistent 2>&1", TDM_TANDEM_BIN);
    FILE *pp = popen(probe, "r");
    size_t pn = pp ? fread(out, 1, sizeof out - 1, pp) : 0;
    out[pn] = 0;
    if (pp) pclose(pp);
    if (strstr(out, "no HTTP server")) return test_skip("this build has no tandem serve (no libmicrohttpd)");
    if (!mkdtemp(g_tmp)) {
        printf("mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    return 0;
}

/* After the tests: g_tmp removed. */
static inline void serve_test_cleanup(void) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    if (system(cmd) != 0) printf("could not remove %s\n", g_tmp);
}

#endif
