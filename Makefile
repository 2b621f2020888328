# unime: top-level entry points. `make demo` and `make test` do all set-up on a fresh Debian 12.
BUILD   ?= build
JOBS    ?= $(shell nproc)
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=Release

.PHONY: all deps build test test-unit demo bench clean format fuzz

all: build

deps:
	bash scripts/install-deps.sh

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja $(CMAKE_FLAGS)

build: deps $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) -L 'unit|model'

test-unit: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) -L unit

demo: build
	$(BUILD)/bin/unime demo --output demo-out --no-check  # the claims are reported (not all hold yet: README "The demo")

bench: build
	cmake --build $(BUILD) -j $(JOBS) --target benches

fuzz:
	cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang -DUNIME_FUZZ=ON
	cmake --build build-fuzz -j $(JOBS) --target fuzzers

format:
	find src tools tests bench fuzz examples -name '*.cpp' -o -name '*.h' | xargs clang-format -i

clean:
	rm -rf $(BUILD) build-fuzz
