#!/usr/bin/env bash
# Packs this machine's OpenBLAS, cJSON and libpng (headers, shared libraries, pkg-config files)
# into .deps/deps.tar.xz for the GPU machine, which has no Debian packages and no network;
# dev/gpu_run.sh unpacks it there. Also fetches the diffusers wheel into .whl/ for the GPU
# benchmark. Both folders are build inputs, not sources: keep them out of git
# (echo /.deps/ >> .git/info/exclude; echo /.whl/ >> .git/info/exclude) and pass them in `carry`.
set -euo pipefail
cd "$(dirname "$0")/.."
t=$(mktemp -d)
mkdir -p "$t/.deps/include" "$t/.deps/lib" "$t/.deps/pkgconfig"
cp -r /usr/include/x86_64-linux-gnu/openblas-pthread/* /usr/include/cjson "$t/.deps/include/"
cp /usr/include/png.h /usr/include/pngconf.h /usr/include/pnglibconf.h "$t/.deps/include/"
L=/usr/lib/x86_64-linux-gnu
cp -L $L/openblas-pthread/libopenblas.so.0 $L/libgfortran.so.5 $L/libquadmath.so.0 \
      $L/libcjson.so.1 $L/libpng16.so.16 "$t/.deps/lib/"
(cd "$t/.deps/lib" && ln -s libopenblas.so.0 libopenblas.so && ln -s libcjson.so.1 libcjson.so \
   && ln -s libpng16.so.16 libpng16.so)
for n in openblas:openblas libcjson:cjson libpng:png16; do
  printf 'prefix=${pcfiledir}/..\nName: %s\nDescription: carried\nVersion: 0\nCflags: -I${prefix}/include\nLibs: -L${prefix}/lib -l%s\n' \
    "${n%%:*}" "${n##*:}" > "$t/.deps/pkgconfig/${n%%:*}.pc"
done
# MHD=1: also libmicrohttpd and the GnuTLS libraries it needs, so the GPU build has `tandem serve`
# (TDM_SERVE=AUTO finds it) for bench/run_serve.sh (BENCH_SERVE=1)
if [ "${MHD:-0}" = 1 ]; then
  cp /usr/include/microhttpd.h "$t/.deps/include/"
  for l in libmicrohttpd.so.12 libgnutls.so.30 libp11-kit.so.0 libidn2.so.0 libunistring.so.2 \
           libtasn1.so.6 libnettle.so.8 libhogweed.so.6 libgmp.so.10 libffi.so.8; do
    cp -L "$L/$l" "$t/.deps/lib/"
  done
  (cd "$t/.deps/lib" && ln -s libmicrohttpd.so.12 libmicrohttpd.so)
  printf 'prefix=${pcfiledir}/..\nName: libmicrohttpd\nDescription: carried\nVersion: 0.9.75\nCflags: -I${prefix}/include\nLibs: -L${prefix}/lib -lmicrohttpd\n' \
    > "$t/.deps/pkgconfig/libmicrohttpd.pc"
fi
mkdir -p .deps
(cd "$t" && tar cJf "$OLDPWD/.deps/deps.tar.xz" .deps)
rm -rf "$t"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 -d .whl diffusers==0.42.1
ls -la .deps .whl
