/* demo_check.h — reads what a picture of the demo model shows: the
 * background colour (from the border), the object's colour (from the pixels
 * that differ from the background) and its shape (from simple moments of
 * those pixels). Deterministic, no model: tests/test_demo.c first checks it
 * on scenes rendered by the training data generator (tools/train/data.py),
 * then uses it to judge the model's images.
 *
 * Shape features, on the object mask (pixels nearer the object's colour than
 * the background's):
 *   fill  = area / bounding-box area: square 1.0, circle 0.79, ring 0.55,
 *           cross 0.51, triangle 0.5, star 0.38 (ideal shapes of data.py);
 *   hole  = the box's centre is not covered (ring);
 *   dy    = (centroid y - box centre y) / box height: triangle +0.17
 *           (apex up), star +0.05, the others 0;
 *   the radial profile r(angle) from the centroid to the mask's edge, in
 *   5-degree steps: its relative range `amp` (circle ~0, square 0.35,
 *   triangle, star and cross 0.6-0.8) and its number of `peaks` (corners,
 *   points, arms: square and cross 4, triangle 3, star 5), which survive
 *   the blur of the autoencoder better than fill does. */
#ifndef TDM_DEMO_CHECK_H
#define TDM_DEMO_CHECK_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define DEMO_NCOLOURS 8

typedef struct {
    const char *names[DEMO_NCOLOURS];
    float rgb[DEMO_NCOLOURS][3];
} demo_palette_t;

typedef struct {
    int background, colour;   /* palette indices; -1: none found */
    const char *shape;        /* "circle", "square", ...; NULL: none found */
    double fill, dy, amp;
    int hole, area, peaks;
} demo_reading_t;

static inline double demo_dist2(const float *a, const float *b) {
    double d = 0;
    for (int c = 0; c < 3; c++) d += ((double)a[c] - b[c]) * ((double)a[c] - b[c]);
    return d;
}

static inline int demo_nearest(const demo_palette_t *pal, const float *rgb) {
    int best = 0;
    for (int k = 1; k < DEMO_NCOLOURS; k++)
        if (demo_dist2(rgb, pal->rgb[k]) < demo_dist2(rgb, pal->rgb[best])) best = k;
    return best;
}

static int demo_cmp_u8(const void *a, const void *b) {
    return (int)*(const uint8_t *)a - (int)*(const uint8_t *)b;
}

/* Per-channel median of the pixels i with sel[i] (sel NULL: the border ring
 * of width 2) of a w x h RGB image with row stride `stride` pixels. */
static inline int demo_median(const uint8_t *rgb, int w, int h, int stride, const uint8_t *sel,
                              float out[3]) {
    uint8_t *v = malloc((size_t)w * h);
    int n = 0;
    for (int c = 0; c < 3; c++) {
        n = 0;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                int border = x < 2 || y < 2 || x >= w - 2 || y >= h - 2;
                if (sel ? sel[y * w + x] : border) v[n++] = rgb[((size_t)y * stride + x) * 3 + c];
            }
        if (n) {
            qsort(v, (size_t)n, 1, demo_cmp_u8);
            out[c] = v[n / 2];
        }
    }
    free(v);
    return n;
}

/* Keeps the largest 4-connected component of mask (w x h, values 0/1). */
static inline void demo_largest_component(uint8_t *mask, int w, int h) {
    int *lab = calloc((size_t)w * h, sizeof *lab), *stack = malloc((size_t)w * h * sizeof *stack);
    int nlab = 0, best = 0, best_n = 0;
    for (int s = 0; s < w * h; s++) {
        if (!mask[s] || lab[s]) continue;
        int top = 0, n = 0;
        lab[s] = ++nlab;
        stack[top++] = s;
        while (top) {
            int i = stack[--top], x = i % w, y = i / w;
            n++;
            int nb[4] = {x > 0 ? i - 1 : -1, x < w - 1 ? i + 1 : -1, y > 0 ? i - w : -1,
                         y < h - 1 ? i + w : -1};
            for (int k = 0; k < 4; k++)
                if (nb[k] >= 0 && mask[nb[k]] && !lab[nb[k]]) {
                    lab[nb[k]] = nlab;
                    stack[top++] = nb[k];
                }
        }
        if (n > best_n) {
            best_n = n;
            best = nlab;
        }
    }
    for (int i = 0; i < w * h; i++) mask[i] = lab[i] == best && best;
    free(lab);
    free(stack);
}

#define DEMO_RAYS 72

/* The radial profile's relative range and its peaks (local maxima over
 * +-25 degrees, so that the two corners of a cross's arm make one peak,
 * standing 10 % above the mean) around (mx, my). */
static inline void demo_radial(const uint8_t *mask, int w, int h, double mx, double my, double *amp,
                               int *peaks) {
    double r[DEMO_RAYS], s[DEMO_RAYS], mean = 0, lo = 1e9, hi = 0;
    for (int k = 0; k < DEMO_RAYS; k++) {
        double a = k * (2 * 3.14159265358979 / DEMO_RAYS), t = 0;
        for (; t < w + h; t += 0.5) {
            int x = (int)(mx + t * cos(a) + 0.5), y = (int)(my + t * sin(a) + 0.5);
            if (x < 0 || y < 0 || x >= w || y >= h || !mask[y * w + x]) break;
        }
        r[k] = t;
    }
    for (int k = 0; k < DEMO_RAYS; k++) {
        s[k] = (r[(k + DEMO_RAYS - 1) % DEMO_RAYS] + r[k] + r[(k + 1) % DEMO_RAYS]) / 3;
        mean += s[k] / DEMO_RAYS;
    }
    for (int k = 0; k < DEMO_RAYS; k++) {
        if (s[k] < lo) lo = s[k];
        if (s[k] > hi) hi = s[k];
    }
    *amp = mean > 0 ? (hi - lo) / mean : 0;
    *peaks = 0;
    for (int k = 0; k < DEMO_RAYS; k++) {
        int top = s[k] > 1.1 * mean && s[k] > s[(k + DEMO_RAYS - 1) % DEMO_RAYS];
        for (int j = 1; j <= 5 && top; j++)
            top = s[k] >= s[(k + j) % DEMO_RAYS] && s[k] >= s[(k + DEMO_RAYS - j) % DEMO_RAYS];
        *peaks += top;
    }
}

/* Reads one w x h scene at `rgb` (row stride `stride` pixels). */
static inline demo_reading_t demo_read(const demo_palette_t *pal, const uint8_t *rgb, int w, int h,
                                       int stride) {
    demo_reading_t r = {-1, -1, NULL, 0, 0, 0, 0, 0, 0};
    float bg[3], obj[3];
    demo_median(rgb, w, h, stride, NULL, bg);
    r.background = demo_nearest(pal, bg);
    uint8_t *mask = calloc((size_t)w * h, 1);
    /* first pass: clearly not background; the object's colour from those */
    int n = 0;
    for (int i = 0; i < w * h; i++) {
        const uint8_t *p = rgb + ((size_t)(i / w) * stride + i % w) * 3;
        float f[3] = {p[0], p[1], p[2]};
        mask[i] = demo_dist2(f, bg) > 60.0 * 60.0;
        n += mask[i];
    }
    if (n < 8) {
        free(mask);
        return r;
    }
    demo_median(rgb, w, h, stride, mask, obj);
    r.colour = demo_nearest(pal, obj);
    /* second pass: nearer the object's colour than the background's, the
     * largest connected piece of it */
    for (int i = 0; i < w * h; i++) {
        const uint8_t *p = rgb + ((size_t)(i / w) * stride + i % w) * 3;
        float f[3] = {p[0], p[1], p[2]};
        mask[i] = demo_dist2(f, obj) < demo_dist2(f, bg);
    }
    demo_largest_component(mask, w, h);
    int x0 = w, y0 = h, x1 = -1, y1 = -1;
    double sx = 0, sy = 0;
    r.area = 0;
    for (int i = 0; i < w * h; i++) {
        if (!mask[i]) continue;
        int x = i % w, y = i / w;
        r.area++;
        sx += x;
        sy += y;
        if (x < x0) x0 = x;
        if (x > x1) x1 = x;
        if (y < y0) y0 = y;
        if (y > y1) y1 = y;
    }
    if (r.area < 8) {
        free(mask);
        return r;
    }
    int bw = x1 - x0 + 1, bh = y1 - y0 + 1;
    r.fill = (double)r.area / ((double)bw * bh);
    r.dy = (sy / r.area + 0.5 - (y0 + bh / 2.0)) / bh;
    int cx = x0 + bw / 2, cy = y0 + bh / 2, covered = 0;
    for (int y = cy - 1; y <= cy + 1; y++)
        for (int x = cx - 1; x <= cx + 1; x++)
            if (x >= 0 && y >= 0 && x < w && y < h) covered += mask[y * w + x];
    r.hole = covered <= 2;
    demo_radial(mask, w, h, sx / r.area, sy / r.area, &r.amp, &r.peaks);
    free(mask);
    if (r.hole) r.shape = "ring";
    else if (r.amp < 0.15) r.shape = "circle";
    else if (r.fill >= 0.8) r.shape = "square";
    else if (r.peaks == 3) r.shape = "triangle";
    else if (r.peaks == 5) r.shape = "star";
    else if (r.peaks == 4) r.shape = "cross";
    else if (r.fill >= 0.65) r.shape = "circle";
    else if (r.dy >= 0.085) r.shape = "triangle";
    else if (r.fill >= 0.45) r.shape = "cross";
    else r.shape = "star";
    return r;
}

#endif
