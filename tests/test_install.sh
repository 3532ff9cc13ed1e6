#!/bin/sh
# test_install.sh — `cmake --install` into a scratch prefix, then a small
# program using only the public API (include/tandem.h) is built against the
# installed files three ways and run on the tiny SD pipeline:
#   shared  cc prog.c $(pkg-config --cflags --libs tandem)            (libtandem.so)
#   static  cc prog.c $(pkg-config --static --cflags --libs tandem)   (libtandem.a only:
#           a copy of the prefix without the .so, so the .pc's Libs.private is what links)
#   cmake   find_package(tandem) + target_link_libraries(prog tandem::tandem)
# The three must print the same image checksum. Exits 77 (skipped) when
# pkg-config is missing; any other failure exits 1 and says which step.
#
# usage: test_install.sh BUILD_DIR MODEL_DIR CC [EXTRA_FLAGS]
set -u
build=$1 model=$2 cc=$3 extra=${4:-}

if ! command -v pkg-config >/dev/null 2>&1; then
    echo "SKIP test_install: pkg-config not found (Debian: apt-get install pkg-config)"
    exit 77
fi
tmp=$(mktemp -d /tmp/tdm_install_XXXXXX) || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM
fail() { echo "FAIL test_install: $*"; [ -s "$tmp/log" ] && sed -n '1,40p' "$tmp/log"; exit 1; }

pfx=$tmp/prefix
cmake --install "$build" --prefix "$pfx" >"$tmp/log" 2>&1 || fail "cmake --install"
for f in bin/tandem lib/libtandem.a lib/libtandem.so include/tandem.h lib/pkgconfig/tandem.pc \
         lib/cmake/tandem/tandemConfig.cmake lib/cmake/tandem/tandemConfigVersion.cmake; do
    [ -e "$pfx/$f" ] || fail "$f was not installed"
done
"$pfx/bin/tandem" --help >/dev/null 2>&1 || fail "the installed bin/tandem --help failed"

cat >"$tmp/prog.c" <<'EOF'
/* one 2-step image through the public API; prints class, size and a checksum */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <tandem.h>

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    tdm_pipeline_params_t pp;
    tdm_pipeline_params_init(&pp);
    tdm_pipeline_t *pipe = NULL;
    if (tdm_pipeline_open(&pipe, argv[1], &pp) != TDM_OK) {
        fprintf(stderr, "open: %s\n", tdm_last_error());
        return 1;
    }
    tdm_pipeline_info_t info;
    tdm_pipeline_info(pipe, &info);
    tdm_generate_params_t gp;
    tdm_generate_params_init(&gp);
    gp.steps = 2;
    gp.seed = 7;
    const int w = info.default_width, h = info.default_height;
    uint8_t *rgb = malloc((size_t)w * (size_t)h * 3);
    if (!rgb || tdm_pipeline_generate(pipe, "a red fox", NULL, &gp, NULL, rgb) != TDM_OK) {
        fprintf(stderr, "generate: %s\n", rgb ? tdm_last_error() : "out of memory");
        return 1;
    }
    uint64_t sum = 1469598103934665603ull;   /* FNV-1a over the pixels */
    int lo = 255, hi = 0;
    for (size_t i = 0; i < (size_t)w * (size_t)h * 3; i++) {
        sum = (sum ^ rgb[i]) * 1099511628211ull;
        if (rgb[i] < lo) lo = rgb[i];
        if (rgb[i] > hi) hi = rgb[i];
    }
    printf("%s %s %dx%d %016llx\n", TANDEM_VERSION, info.class_name, w, h, (unsigned long long)sum);
    free(rgb);
    tdm_pipeline_close(pipe);
    return hi > lo ? 0 : 1;   /* a flat image is not an image */
}
EOF
cflags="-std=c11 -Wall -Wextra -Werror $extra"
export PKG_CONFIG_PATH="$pfx/lib/pkgconfig"
pkg-config --exists tandem 2>"$tmp/log" || fail "pkg-config does not find tandem.pc"
# shellcheck disable=SC2046
"$cc" $cflags "$tmp/prog.c" -o "$tmp/prog_shared" $(pkg-config --cflags --libs tandem) >"$tmp/log" 2>&1 ||
    fail "shared link: $cc prog.c $(pkg-config --cflags --libs tandem)"
LD_LIBRARY_PATH="$pfx/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$tmp/prog_shared" "$model" >"$tmp/shared.txt" 2>"$tmp/log" ||
    fail "the shared-linked program failed"
readelf -d "$tmp/prog_shared" | grep -q 'NEEDED.*libtandem\.so' || fail "prog_shared does not use libtandem.so"

spfx=$tmp/static-prefix   # the same files less the shared library
cp -a "$pfx" "$spfx" && rm -f "$spfx"/lib/libtandem.so* || fail "copying the prefix"
export PKG_CONFIG_PATH="$spfx/lib/pkgconfig"
# shellcheck disable=SC2046
"$cc" $cflags "$tmp/prog.c" -o "$tmp/prog_static" $(pkg-config --static --cflags --libs tandem) >"$tmp/log" 2>&1 ||
    fail "static link: $cc prog.c $(pkg-config --static --cflags --libs tandem)"
readelf -d "$tmp/prog_static" | grep -q 'libtandem' && fail "prog_static needs a shared libtandem"
"$tmp/prog_static" "$model" >"$tmp/static.txt" 2>"$tmp/log" || fail "the statically linked program failed"

mkdir -p "$tmp/consumer"
cp "$tmp/prog.c" "$tmp/consumer/prog.c"
cat >"$tmp/consumer/CMakeLists.txt" <<'EOF'
cmake_minimum_required(VERSION 3.20)
project(consumer C)
find_package(tandem 0.1 REQUIRED)
add_executable(prog prog.c)
target_link_libraries(prog PRIVATE tandem::tandem)
EOF
cmake -S "$tmp/consumer" -B "$tmp/consumer/build" -DCMAKE_PREFIX_PATH="$pfx" -DCMAKE_C_COMPILER="$cc" \
      -DCMAKE_C_FLAGS="$cflags" -DCMAKE_EXE_LINKER_FLAGS="$extra" >"$tmp/log" 2>&1 ||
    fail "find_package(tandem) project: configure"
cmake --build "$tmp/consumer/build" >"$tmp/log" 2>&1 || fail "find_package(tandem) project: build"
"$tmp/consumer/build/prog" "$model" >"$tmp/cmake.txt" 2>"$tmp/log" || fail "the find_package(tandem) program failed"

echo "shared: $(cat "$tmp/shared.txt")"
echo "static: $(cat "$tmp/static.txt")"
echo "cmake:  $(cat "$tmp/cmake.txt")"
grep -q "StableDiffusionPipeline" "$tmp/shared.txt" || fail "unexpected output"
cmp -s "$tmp/shared.txt" "$tmp/static.txt" || fail "shared and static programs disagree"
cmp -s "$tmp/shared.txt" "$tmp/cmake.txt" || fail "pkg-config and find_package programs disagree"
echo "ok   test_install"
