# Thin wrapper: meson + ninja do the building.  `make run` and `make test` are
# the README's two commands; each first installs the Debian packages it needs.
BUILD ?= build
STATE ?= $(CURDIR)/state

.PHONY: all deps build run stop-host test unit integration fuzz asan bench bench-xs bench-storage bench-vm clean

all: build

deps:
	@scripts/deps.sh

build: deps
	@[ -f $(BUILD)/build.ninja ] || meson setup $(BUILD) >/dev/null
	@ninja -C $(BUILD)

run: build
	@STATE=$(STATE) BUILD=$(BUILD) scripts/run.sh

# The simulated host's xenstored and guests outlive xapi (running VMs survive
# a restart, as on a real host); this stops them.
stop-host:
	@for f in $(STATE)/sim/xs/xenstored.pid $(STATE)/sim/simguest.pid; do \
		[ -s $$f ] && kill $$(cat $$f) 2>/dev/null; true; done

test: build
	@BUILD=$(BUILD) scripts/test.sh

bench: build
	@BUILD=$(BUILD) bench/run.sh

bench-xs: build
	@BUILD=$(BUILD) bench/xs/run.sh

bench-storage: build
	@BUILD=$(BUILD) bench/storage/run.sh

# The VM figures of issue 6 (bench/vm/README.md), on its own release build.
BENCHVM_BUILD ?= build-benchvm
bench-vm: deps
	@[ -f $(BENCHVM_BUILD)/build.ninja ] || meson setup $(BENCHVM_BUILD) --buildtype=release >/dev/null
	@ninja -C $(BENCHVM_BUILD)
	@/usr/bin/python3 bench/vm/bench.py --xapi $${XAPI_BIN:-$(BENCHVM_BUILD)/src/xapi/xapi}

clean:
	rm -rf $(BUILD) build-asan build-fuzz
