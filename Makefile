# plexus — the two commands: `make run` and `make test`.
# Both first install missing Debian packages (deps/debian.txt), then build with CMake.

JOBS    ?= $(shell nproc)
BUILD   ?= build
RELEASE := $(BUILD)/release
ASAN    := $(BUILD)/asan
TSAN    := $(BUILD)/tsan
CMAKE_FLAGS ?=

.PHONY: all run test deps build build-asan build-tsan unit integration fuzz-replay fuzz format lint \
        clean bench-http bench-h2 bench-ws bench-hub bench-tls bench-forward bench-pusher bench-passenger bench-cluster \
        bench-micro npm-deps soak

all: build

deps:
	@sh deps/install.sh deps/debian.txt

# Node test clients (ws, playwright-core) for the integration and browser tests.
npm-deps: deps
	@if [ -f tests/package-lock.json ] && { [ ! -f tests/node_modules/.package-lock.json ] || \
	    [ tests/package-lock.json -nt tests/node_modules/.package-lock.json ]; }; then \
	    cd tests && npm ci --no-audit --no-fund --loglevel=error; fi

build: deps
	@cmake -S . -B $(RELEASE) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) >/dev/null
	cmake --build $(RELEASE) -j $(JOBS)

# ASan + UBSan with clang, fuzzers included (corpus replay runs in this build).
build-asan: deps
	@CC=clang cmake -S . -B $(ASAN) -DCMAKE_BUILD_TYPE=Debug -DPX_SANITIZE=ON \
	    -DPX_BUILD_FUZZERS=ON -DPX_BUILD_BENCH=OFF $(CMAKE_FLAGS) >/dev/null
	cmake --build $(ASAN) -j $(JOBS)

# ThreadSanitizer (gcc + libtsan2): the integration suite only, servers with 3 workers.
build-tsan: deps
	@cmake -S . -B $(TSAN) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPX_TSAN=ON \
	    -DPX_BUILD_BENCH=OFF $(CMAKE_FLAGS) >/dev/null
	cmake --build $(TSAN) -j $(JOBS)

run: build
	@mkdir -p var
	$(RELEASE)/plexus --listen 127.0.0.1:8080 --data-dir var --allow-anonymous

# Whole suite: normal build, the ASan+UBSan build, then the integration suite
# under ThreadSanitizer; ends with "total: N passed, N failed, N skipped".
test: build build-asan build-tsan npm-deps
	@sh tests/run.sh $(RELEASE) $(ASAN) $(TSAN)

unit: build
	cd $(RELEASE) && ctest -L unit --output-on-failure

integration: build npm-deps
	cd $(RELEASE) && ctest -L integration --output-on-failure

fuzz-replay: build-asan
	cd $(ASAN) && ctest -L fuzz --output-on-failure

# Run every libFuzzer harness FUZZ_SECONDS each, FUZZ_JOBS at a time (not a test).
FUZZ_SECONDS ?= 600
FUZZ_JOBS ?= 2
fuzz: build-asan
	bash tests/fuzz/run.sh $(ASAN) $(FUZZ_SECONDS) $(FUZZ_JOBS) $(FUZZ)

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

lint:
	sh tests/lint.sh .

bench-micro: build
	@for b in $(RELEASE)/bench/bench_*; do echo "== $$b"; $$b; done

bench-http: build
	@sh deps/install.sh deps/bench.txt
	sh bench/http.sh $(RELEASE)

bench-h2: build
	@sh deps/install.sh deps/bench.txt
	bash bench/h2.sh $(RELEASE)

# TLS handshakes, HTTPS keep-alive, static files with kTLS on/off and idle memory,
# vs nginx and h2o with the same certificates (bench/tls.sh; docs/benchmarks.md).
bench-tls: build
	@sh deps/install.sh deps/bench.txt
	bash bench/tls.sh $(RELEASE)

# The Node addon: through Passenger Standalone vs a plain Node handler, and on a TCP port vs
# the plexus binary (bench/passenger.sh; docs/benchmarks.md).
bench-passenger: build
	@sh deps/install.sh deps/bench.txt
	bash bench/passenger.sh $(RELEASE)

bench-ws: build
	@sh deps/install.sh deps/bench.txt
	@[ -d bench/peers/node_modules ] || (cd bench/peers && npm ci --no-audit --no-fund --loglevel=error)
	bash bench/ws.sh

bench-hub: build
	@sh deps/install.sh deps/bench.txt
	bash bench/hub.sh $(RELEASE)

bench-pusher: build
	@sh deps/install.sh deps/bench.txt
	@[ -d bench/peers/node_modules ] || (cd bench/peers && npm ci --no-audit --no-fund --loglevel=error)
	bash bench/pusher.sh $(RELEASE)

# Pass-through: plexus --forward vs sslh (select, fork), direct as the floor (bench/forward.sh).
bench-forward: build
	@sh deps/install.sh deps/bench.txt
	bash bench/forward.sh $(RELEASE)

# Several nodes (docs/scaling.md): one node on SQLite, two on Redis, two on PostgreSQL,
# fanout and durable HTTP publishes, per CPU-second of every server process.
bench-cluster: build
	@sh deps/install.sh deps/bench.txt
	/usr/bin/python3 bench/cluster.py $(RELEASE)

# Mixed load against build/release/plexus for SOAK_SECONDS (600), then RSS and fds must
# come back to their post-warm-up level (bench/soak.py). Not part of `make test`.
soak: build
	/usr/bin/python3 bench/soak.py $(RELEASE)/plexus

clean:
	rm -rf $(BUILD)
