# templateworker — build, run and test.
#
#   make run    build and start a master with the embedded SQLite store in ./data
#   make test   the whole test suite (go vet, -race tests, benchmarks compiled);
#               starts a throwaway PostgreSQL when it can, so the PostgreSQL
#               tests run too
#   make bench  the benchmark suite
#   make build  build bin/templateworker
#   make cover  per-package coverage of the tests, end-to-end tests included
#               (their masters and workers run a coverage-instrumented binary)

GO       ?= go
BIN      := bin/templateworker
VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X main.version=$(VERSION)
RUN_ARGS ?= --process-workers 2

.PHONY: build run test test-go bench bench-run vet fmt clean cover cover-run

build:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/templateworker

run: build
	./$(BIN) master $(RUN_ARGS) --data-dir ./data

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go' | grep -v '^third_party/'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go' | grep -v '^third_party/'); exit 1; }
	$(GO) vet ./...

# test runs everything. Without TEMPLATEWORKER_TEST_DATABASE_URL it starts a
# throwaway local PostgreSQL for the run when the server is installed (see
# .ci/with-postgres.sh), so the PostgreSQL tests run too.
test: build vet
	bash .ci/with-postgres.sh $(MAKE) --no-print-directory test-go

test-go:
	TEMPLATEWORKER_BIN=$(CURDIR)/$(BIN) $(GO) test -race -count=1 -timeout 15m ./...
	@echo "the hostile corpus and neighbour tests on serial workers (--worker-concurrency 1; ./... ran them at the default 4)"
	TEMPLATEWORKER_BIN=$(CURDIR)/$(BIN) $(GO) test -race -count=1 -timeout 10m -run 'TestHostile|TestSuperWatchdog|TestSuperBlame' ./cmd/templateworker -args -worker-concurrency 1
	@echo "the patched go-lua's own tests (a nested module, not in ./...)"
	cd third_party/go-lua && $(GO) test -race -count=1 -timeout 15m ./...
	@echo "compiling and running every benchmark once (-benchtime 1x)"
	@out=$$(TEMPLATEWORKER_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -run '^$$' -bench . -benchtime 1x ./... 2>&1) || { echo "$$out" | grep -v '^Benchmark' | tail -60; exit 1; }

# bench runs the benchmark suite against its floors (cmd/benchreport) and
# writes BENCHMARKS.md; BENCH_ROUNDS runs of each, medians reported. Like
# test, it starts a throwaway PostgreSQL when it can, for the PostgreSQL
# store's figures.
BENCH_ROUNDS ?= 3
# BENCH_TENANTS is the number of distinct tenants of BenchmarkManyTenants
# on SQLite (issue 17's 1,000,000: 5-9 minutes here), BENCH_TENANTS_PG
# on PostgreSQL (smaller: its cold dispatches are slower, and the report
# names each store's size); make test runs it with a small default.
BENCH_TENANTS ?= 1000000
BENCH_TENANTS_PG ?= 200000
bench: build
	bash .ci/with-postgres.sh $(MAKE) --no-print-directory bench-run

bench-run:
	TEMPLATEWORKER_BENCH_TENANTS=$(BENCH_TENANTS) TEMPLATEWORKER_BENCH_TENANTS_PG=$(BENCH_TENANTS_PG) TEMPLATEWORKER_BIN=$(CURDIR)/$(BIN) GO=$(GO) $(GO) run ./cmd/benchreport -rounds $(BENCH_ROUNDS) -o BENCHMARKS.md

# cover measures per-package coverage over the unit tests and the
# processes the end-to-end tests start: bin/templateworker-cover is built
# with -cover, and every master and worker it runs writes its counters to
# $(COVERDIR) when it exits normally (internal/testbin passes
# TEMPLATEWORKER_COVERDIR on as their GOCOVERDIR; the tests stop their
# masters with SIGTERM then). Like test, with a throwaway PostgreSQL
# when it can.
COVERDIR := $(CURDIR)/.cover
cover:
	bash .ci/with-postgres.sh $(MAKE) --no-print-directory cover-run

cover-run:
	rm -rf $(COVERDIR) && mkdir -p $(COVERDIR)
	$(GO) build -cover -coverpkg=./... -o bin/templateworker-cover ./cmd/templateworker
	TEMPLATEWORKER_COVERDIR=$(COVERDIR) TEMPLATEWORKER_BIN=$(CURDIR)/bin/templateworker-cover \
		$(GO) test -count=1 -timeout 20m -cover -coverpkg=./... ./... -args -test.gocoverdir=$(COVERDIR)
	@echo "coverage, unit and end-to-end tests together:"
	@$(GO) tool covdata percent -i=$(COVERDIR) | grep -v '/third_party/' | sort

clean:
	rm -rf bin .cover
