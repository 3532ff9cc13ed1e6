/* test_parallel.c — the --parallel spec and the rank layout of its grid,
 * in one process: tdm_parallel_parse (every degree, any order, and one
 * error naming the degree and why for each bad input), the coordinates of
 * every rank for several world sizes and degree combinations (against the
 * layout written out by hand: TP innermost, DP outermost), and the groups
 * of a single-process world. The groups under mpirun: test_dist_mpi. */
#include "dist/dist.h"
#include "dist/groups.h"
#include "test.h"

static tdm_parallel_t parse_ok(const char *spec, int world) {
    tdm_parallel_t d = {0};
    tdm_status st = tdm_parallel_parse(spec, world, &d);
    CHECK_MSG(st == TDM_OK, "\"%s\" world %d: %s", spec, world, tdm_last_error());
    return d;
}

#define SAME(d, DP, C, R, U, T)                                                                   \
    CHECK_MSG((d).dp == (DP) && (d).cfg == (C) && (d).ring == (R) && (d).ulysses == (U) &&          \
                  (d).tp == (T),                                                                  \
              "got dp %d cfg %d ring %d ulysses %d tp %d", (d).dp, (d).cfg, (d).ring, (d).ulysses, \
              (d).tp)

TEST(parse_accepts) {
    tdm_parallel_t d = parse_ok(NULL, 4);
    SAME(d, 4, 1, 1, 1, 1);
    d = parse_ok("", 3);
    SAME(d, 3, 1, 1, 1, 1);
    d = parse_ok("cfg=2", 2);
    SAME(d, 1, 2, 1, 1, 1);
    d = parse_ok("cfg=2", 6);
    SAME(d, 3, 2, 1, 1, 1);
    d = parse_ok("tp=2,cfg=2,ring=3,ulysses=5", 120);
    SAME(d, 2, 2, 3, 5, 2);
    d = parse_ok("ulysses=4", 4);
    SAME(d, 1, 1, 1, 4, 1);
    d = parse_ok("ring=1,cfg=1", 1);
    SAME(d, 1, 1, 1, 1, 1);
    d = parse_ok("ulysses=3,ring=2", 0);   /* syntax only: dp 1, no division check */
    SAME(d, 1, 1, 2, 3, 1);
}

/* The spec fails with `st`, and the message holds every one of the (up to
 * two) fragments. */
static void parse_bad(const char *spec, int world, tdm_status want, const char *f1, const char *f2) {
    tdm_parallel_t d = {0};
    tdm_status st = tdm_parallel_parse(spec, world, &d);
    const char *msg = tdm_last_error();
    CHECK_MSG(st == want, "\"%s\" world %d: status %d, want %d", spec, world, (int)st, (int)want);
    CHECK_MSG(strstr(msg, "--parallel") && strstr(msg, f1) && (!f2 || strstr(msg, f2)) &&
                  !strchr(msg, '\n'),
              "\"%s\": message \"%s\" lacks \"%s\"/\"%s\"", spec, msg, f1, f2 ? f2 : "");
}

TEST(parse_refuses) {
    parse_bad("auto", 4, TDM_ERR_UNSUPPORTED, "auto", "tdm_parallel_choose");
    parse_bad("pp=2", 2, TDM_ERR_INVALID_ARG, "unknown degree \"pp\"", "ulysses, ring, tp or cfg");
    parse_bad("cfg=2,cfg=2", 4, TDM_ERR_INVALID_ARG, "cfg is given twice", NULL);
    parse_bad("tp=x", 2, TDM_ERR_INVALID_ARG, "tp=x", "integer >= 1");
    parse_bad("tp=2.5", 2, TDM_ERR_INVALID_ARG, "tp=2.5", "integer >= 1");
    parse_bad("ring=", 2, TDM_ERR_INVALID_ARG, "ring=", "integer >= 1");
    parse_bad("ring=-1", 2, TDM_ERR_INVALID_ARG, "ring=-1", "integer >= 1");
    parse_bad("ulysses=0", 2, TDM_ERR_INVALID_ARG, "ulysses=0", "integer >= 1");
    parse_bad("cfg=3", 3, TDM_ERR_INVALID_ARG, "cfg=3: cfg must be 1 or 2", NULL);
    parse_bad("cfg", 2, TDM_ERR_INVALID_ARG, "is not KEY=N", NULL);
    parse_bad("cfg=2,", 2, TDM_ERR_INVALID_ARG, "trailing comma", NULL);
    parse_bad(",cfg=2", 2, TDM_ERR_INVALID_ARG, "empty item", NULL);
    parse_bad("ulysses=99999999999", 2, TDM_ERR_INVALID_ARG, "ulysses=", "integer >= 1");
    parse_bad("cfg=2", 3, TDM_ERR_INVALID_ARG, "does not divide the world size 3", "2 ranks per image");
    parse_bad("cfg=2,tp=2", 2, TDM_ERR_INVALID_ARG, "does not divide the world size 2", "4 ranks");
    parse_bad("cfg=2", 1, TDM_ERR_INVALID_ARG, "world size 1", NULL);
    parse_bad("tp=50000,ulysses=50000", 0, TDM_ERR_INVALID_ARG, "too many", NULL);
}

/* Every rank's coordinates against the layout written out as nested loops
 * (dp outermost, then cfg, ring, ulysses, tp innermost), and back. */
static void check_layout(const char *spec, int world) {
    tdm_parallel_t d = parse_ok(spec, world), at;
    CHECK_MSG(d.dp * tdm_parallel_per_image(&d) == world, "%s: %d x %d != %d", spec, d.dp,
              tdm_parallel_per_image(&d), world);
    int r = 0;
    for (int a = 0; a < d.dp; a++)
        for (int c = 0; c < d.cfg; c++)
            for (int g = 0; g < d.ring; g++)
                for (int u = 0; u < d.ulysses; u++)
                    for (int t = 0; t < d.tp; t++, r++) {
                        tdm_parallel_coords(&d, r, &at);
                        CHECK_MSG(at.dp == a && at.cfg == c && at.ring == g && at.ulysses == u &&
                                      at.tp == t,
                                  "%s world %d rank %d: (dp %d cfg %d ring %d ulysses %d tp %d), want "
                                  "(%d %d %d %d %d)", spec, world, r, at.dp, at.cfg, at.ring,
                                  at.ulysses, at.tp, a, c, g, u, t);
                        CHECK_MSG(tdm_parallel_rank(&d, &at) == r, "%s: rank %d round trip gives %d",
                                  spec, r, tdm_parallel_rank(&d, &at));
                    }
    CHECK(r == world);
}

TEST(layout_coordinates) {
    check_layout("", 1);
    check_layout("", 5);
    check_layout("cfg=2", 2);
    check_layout("cfg=2", 4);
    check_layout("cfg=2", 8);
    check_layout("ulysses=2,ring=3", 12);
    check_layout("tp=2,cfg=2", 8);
    check_layout("cfg=2,ring=2,ulysses=2,tp=2", 32);
    check_layout("ring=3,tp=5", 15);
    /* a few by hand: world 8, cfg 2 x tp 2 (dp 2) */
    tdm_parallel_t d = parse_ok("cfg=2,tp=2", 8), at;
    tdm_parallel_coords(&d, 5, &at);   /* 5 = ((1·2 + 0)·1·1 + 0)·2 + 1 */
    CHECK(at.dp == 1 && at.cfg == 0 && at.tp == 1 && at.ring == 0 && at.ulysses == 0);
    tdm_parallel_coords(&d, 2, &at);
    CHECK(at.dp == 0 && at.cfg == 1 && at.tp == 0);
}

TEST(groups_single_process) {
    tdm_dist_t *dd = NULL;
    CHECK(tdm_dist_init(&dd, NULL) == TDM_OK);
    tdm_groups_t *g = tdm_dist_groups(dd);
    CHECK(g && g->deg.dp == 1 && g->deg.cfg == 1 && g->at.dp == 0);
    for (int k = 0; g && k < TDM_GROUP_COUNT; k++)
        CHECK_MSG(g->comm[k] && tdm_comm_size(g->comm[k]) == 1, "group %d", k);
    CHECK(tdm_dist_image_rank(dd) == 0);
    int64_t v[2] = {7, 8};
    CHECK(tdm_dist_image_broadcast_i64(dd, v, 2) == TDM_OK && v[0] == 7 && v[1] == 8);
    tdm_dist_free(dd);
    /* one process cannot hold cfg = 2 */
    tdm_dist_params_t p;
    tdm_dist_params_init(&p);
    p.parallel = "cfg=2";
    dd = NULL;
    CHECK(tdm_dist_init(&dd, &p) == TDM_ERR_INVALID_ARG && dd == NULL);
    CHECK_MSG(strstr(tdm_last_error(), "world size 1"), "%s", tdm_last_error());
}

int main(void) {
    RUN(parse_accepts);
    RUN(parse_refuses);
    RUN(layout_coordinates);
    RUN(groups_single_process);
    return test_summary();
}
