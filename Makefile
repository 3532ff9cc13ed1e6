# Front end for the CMake build. `make demo` and `make test` install the
# Debian packages they need (when missing), build, and run. `make demo`
# builds only the tandem binary; `make test` builds everything.
# CUDA=1 builds the CUDA backend, CUDA=0 does not; by default it is built
# when nvcc is found and `nvidia-smi -L` lists a GPU (CMake's TDM_CUDA=AUTO).
BUILD       ?= build
BUILD_ASAN  ?= build-asan
BUILD_CUDA  ?= build-cuda
JOBS        ?= $(shell nproc)
DEB_PKGS    := cmake pkg-config libopenblas-dev libcjson-dev libpng-dev libmicrohttpd-dev libopenmpi-dev openmpi-bin python3 python3-pip
FUZZ_SECONDS ?= 60
SUDO        := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO_MODEL  ?= models/shapes-64
DEMO_OUT    ?= out/demo
PREFIX      ?= /usr/local
CUDA        ?=
TDM_CUDA    := $(if $(filter 1 ON on yes,$(CUDA)),ON,$(if $(filter 0 OFF off no,$(CUDA)),OFF,AUTO))

.PHONY: all deps configure build build-cuda demo install check-layers test test-asan test-cuda fuzz vocab bench clean

all: build

deps:
	@missing=""; for p in $(DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

# Configures $(BUILD), showing only tandem's own lines (CUDA, MPI on/off).
configure: deps
	@out=$$(cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -DTDM_CUDA=$(TDM_CUDA) -DTDM_SERVE=ON 2>&1) || \
	  { echo "$$out"; exit 1; }; echo "$$out" | grep '^-- tandem:' || true

build: configure
	cmake --build $(BUILD) -j $(JOBS)

demo: configure
	cmake --build $(BUILD) -j $(JOBS) --target tandem_cli
	./$(BUILD)/tandem generate --model $(DEMO_MODEL) \
	  --prompt "a large red circle on a blue background" \
	  --prompt "two small yellow stars at the top, green background" \
	  --prompt "a white ring at the left, purple gradient background" \
	  --prompt "a large black triangle on an orange background" \
	  --steps 20 --guidance 3 --seed 7 --overwrite --out $(DEMO_OUT)
	@echo "4 images (64x64, one per prompt) and manifest.jsonl in $(DEMO_OUT)/"

# bin/tandem, lib/libtandem.{a,so}, include/tandem.h, lib/pkgconfig/tandem.pc
# and lib/cmake/tandem/ under PREFIX.
install: configure
	cmake --build $(BUILD) -j $(JOBS) --target tandem_cli tandem tandem_shared
	cmake --install $(BUILD) --prefix $(PREFIX)

# The real CLIP vocabulary for the tokenizer parity test (from the
# open_clip_torch wheel on PyPI; not committed). Offline, the note below is
# printed and ctest reports test_clip_tokenizer_full_vocab as skipped.
vocab:
	@[ -f tests/fixtures/clip-vocab/vocab.json ] || { \
	  echo "fetching the CLIP vocabulary from PyPI (open_clip_torch wheel) for the tokenizer test"; \
	  bash tools/fetch_clip_vocab.sh || \
	  echo "note: could not fetch the CLIP vocabulary (offline?); test_clip_tokenizer_full_vocab will be skipped"; }

# Includes in src/ go down the layers of DESIGN.md only (no build needed).
check-layers: deps
	python3 tools/check_layers.py

test: check-layers build vocab
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

test-asan: deps vocab
	cmake -S . -B $(BUILD_ASAN) -DCMAKE_BUILD_TYPE=Debug -DTDM_SANITIZE=ON -DTDM_SERVE=ON >/dev/null
	cmake --build $(BUILD_ASAN) -j $(JOBS)
	cd $(BUILD_ASAN) && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp ctest --output-on-failure -j $(JOBS)

# The `cuda` tier: every CUDA op and model against the CPU reference. Needs
# nvcc to build and a GPU to run (without one ctest reports them skipped).
# build-cuda compiles everything with the CUDA backend (no GPU needed; CI
# runs it where nvcc exists); test-cuda also runs the cuda tier.
build-cuda: deps
	cmake -S . -B $(BUILD_CUDA) -DCMAKE_BUILD_TYPE=Release -DTDM_CUDA=ON >/dev/null
	cmake --build $(BUILD_CUDA) -j $(JOBS)

test-cuda: build-cuda
	cd $(BUILD_CUDA) && ctest -L cuda --output-on-failure

fuzz: deps
	bash tools/run_fuzz.sh $(FUZZ_SECONDS)

clean:
	rm -rf $(BUILD) $(BUILD_ASAN) $(BUILD_CUDA) build-fuzz
