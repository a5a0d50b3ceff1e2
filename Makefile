# sluice: progressive delivery for Flux, with Git as the source of truth.

# The project builds with Go 1.27.3; the go command fetches it from the
# module proxy the first time.
export GOTOOLCHAIN := go1.27.3

BIN := $(CURDIR)/bin
CONTROLLER_GEN := $(BIN)/controller-gen
CRD_REF_DOCS := $(BIN)/crd-ref-docs
# envtest finds etcd and kube-apiserver here.
export KUBEBUILDER_ASSETS := $(BIN)

# Packages whose tests need no cluster, those that run on envtest, and the
# end-to-end suite.
ENVTEST_PKGS := ./apis/... ./controllers/...
E2E_PKGS := ./e2e
UNIT_PKGS = $(shell GOTOOLCHAIN=$(GOTOOLCHAIN) go list ./... | grep -v -e /apis/ -e /controllers -e '/e2e$$')

GO_TEST_FLAGS ?= -count=1
E2E_TIMEOUT ?= 30m

.DEFAULT_GOAL := help

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} \
		/^[a-zA-Z0-9_-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } \
		/^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate deepcopy code for the API types.
	$(CONTROLLER_GEN) object:headerFile=hack/boilerplate.go.txt paths=./apis/...

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate CRDs and RBAC from the markers.
	$(CONTROLLER_GEN) crd rbac:roleName=sluice-manager paths=./apis/... paths=./controllers/... \
		output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac

.PHONY: api-docs
api-docs: $(CRD_REF_DOCS) ## Generate the API reference docs/reference.md from the API types.
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	if ! $(CRD_REF_DOCS) --source-path=./apis --config=hack/api-docs/config.yaml \
		--templates-dir=hack/api-docs/templates --renderer=markdown --max-depth=30 \
		--log-level=WARN --output-path="$$tmp" >"$$tmp/log" 2>&1 || [ -s "$$tmp/log" ]; then \
		cat "$$tmp/log" >&2; echo "crd-ref-docs failed or warned; docs/reference.md not written" >&2; exit 1; fi && \
	cat -s "$$tmp/out.md" > docs/reference.md

.PHONY: fmt
fmt: ## Format the code.
	go fmt ./...

.PHONY: vet
vet: ## Vet the code.
	go vet ./...

.PHONY: verify
verify: generate manifests api-docs ## Fail when generated files or go.mod are out of date.
	go mod tidy
	@if [ -n "$$(git status --porcelain -- apis config go.mod go.sum docs/reference.md)" ]; then \
		echo "generated files are out of date; run 'make generate manifests api-docs' and 'go mod tidy':"; \
		git status --porcelain -- apis config go.mod go.sum docs/reference.md; git diff -- apis config go.mod go.sum docs/reference.md | head -100; exit 1; fi
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }

##@ Build

# sluice is built as its image builds it (Dockerfile): static, without
# symbol tables. The stack, the benchmarks and the tests run what ships, and
# a dynamically linked binary would also weigh its dynamic symbol tables in
# the resident memory the benchmarks measure.
BUILD_SLUICE = CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o $(BIN)/sluice .

.PHONY: build
build: ## Build the sluice binary into bin/.
	$(BUILD_SLUICE)

CLI_OUT ?= $(CURDIR)/dist

.PHONY: cli
cli: ## Build the sluice command line into CLI_OUT (dist/), with kubectl-sluice linked beside it.
	@mkdir -p $(CLI_OUT)
	go build -o $(CLI_OUT)/sluice ./cmd/sluice
	ln -sf sluice $(CLI_OUT)/kubectl-sluice

.PHONY: tools
tools: ## Build the pinned tools and the test control plane into the cache, link them into bin/.
	hack/tools.sh

IMG ?= ghcr.io/sluice-dev/sluice:latest

.PHONY: release-manifests
release-manifests: tools ## Render one install YAML (CRDs, RBAC, Deployment) into dist/sluice.yaml, and the component for Flux's install into dist/flux/; IMG sets the image.
	mkdir -p dist/flux
	$(BIN)/kubectl kustomize config/default | sed 's#ghcr.io/sluice-dev/sluice:latest#$(IMG)#' > dist/sluice.yaml
	cp config/flux/kustomization.yaml dist/flux/kustomization.yaml
	@echo "wrote dist/sluice.yaml for $(IMG) and dist/flux/kustomization.yaml"

$(CONTROLLER_GEN):
	hack/tools.sh controller-gen

$(CRD_REF_DOCS):
	hack/tools.sh crd-ref-docs

##@ Test

.PHONY: test
test: tools vet test-unit test-envtest test-e2e demo bench-scale-small bench-latency-small ## Run every tier: unit, envtest, end-to-end, the demo, and the benchmarks on the stack at small sizes.

.PHONY: test-unit
test-unit: ## Unit tests.
	go test $(GO_TEST_FLAGS) $(UNIT_PKGS)

.PHONY: test-envtest
test-envtest: ## Tests against a real kube-apiserver and etcd.
	go test $(GO_TEST_FLAGS) $(ENVTEST_PKGS)

.PHONY: test-e2e
test-e2e: ## End-to-end tests on the whole stack: control plane, kwok, Argo Rollouts, Flux, Git, sluice.
	go test $(GO_TEST_FLAGS) -timeout $(E2E_TIMEOUT) -v $(E2E_PKGS)

FUZZTIME ?= 30s

.PHONY: fuzz
fuzz: tools ## Run each fuzz target for FUZZTIME (30s by default); make test runs their seeds.
	@set -e; for target in gitops:FuzzAdopt gitops:FuzzRecordRejection gitops:FuzzParkAndOptOut controllers:FuzzTruncate controllers:FuzzPromotionBranch controllers:FuzzCommitMessage; do \
		pkg=$${target%%:*}; name=$${target#*:}; \
		echo "fuzzing $$name in ./$$pkg for $(FUZZTIME)"; \
		go test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) ./$$pkg; \
	done

# The releases bench-latency measures each path over.
LATENCY_EVENTS ?= 50

.PHONY: bench
bench: tools ## Go benchmarks, then sluice's steady-state latencies (p50, p95) over LATENCY_EVENTS releases on the local stack.
	go test -run '^$$' -bench . -benchmem $(UNIT_PKGS)
	$(MAKE) bench-latency

.PHONY: bench-latency
bench-latency: tools ## Time sluice's in-cluster and push paths over LATENCY_EVENTS releases of one app on a fresh stack.
	$(BUILD_SLUICE)
	go build -o $(BIN)/bench-latency ./e2e/cmd/bench-latency
	$(BIN)/bench-latency --bin $(BIN) --root $(CURDIR) --sluice $(BIN)/sluice --events $(LATENCY_EVENTS)

.PHONY: bench-latency-small
bench-latency-small: tools ## bench-latency over 3 releases, so that make test keeps it working.
	$(MAKE) bench-latency LATENCY_EVENTS=3

##@ Local stack

STACK_DIR := $(CURDIR)/.stack

.PHONY: up
up: tools ## Start the local stack and sluice in the background; writes .stack/env.
	go build -o $(BIN)/stack ./e2e/cmd/stack
	$(BIN)/stack up --dir $(STACK_DIR) --bin $(BIN) --root $(CURDIR)

.PHONY: down
down: ## Stop the local stack.
	go build -o $(BIN)/stack ./e2e/cmd/stack
	$(BIN)/stack down --dir $(STACK_DIR)

.PHONY: demo
demo: tools ## Play sluice's whole story through Git on a fresh stack (SLUICE_DEMO_PAUSE=1 pauses, SLUICE_DEMO_KEEP=1 keeps it).
	$(BUILD_SLUICE)
	go build -o $(BIN)/kubectl-sluice ./cmd/sluice
	go build -o $(BIN)/demo ./e2e/cmd/demo
	$(BIN)/demo --bin $(BIN) --root $(CURDIR) --sluice $(BIN)/sluice --cli $(BIN)/kubectl-sluice

##@ Scale

# The fleet bench-scale pushes: BENCH_KUSTOMIZATIONS folders of BENCH_APPS
# annotated Deployments each, delivered by BENCH_SHARDS sluice processes.
BENCH_KUSTOMIZATIONS ?= 100
BENCH_APPS ?= 10
BENCH_SHARDS ?= 1
BENCH_TIMEOUT ?= 30m
# How long sluice is measured idle once the fleet is delivered.
BENCH_IDLE ?= 1m
# BENCH_PERSON, when set (e.g. 5s), is how often a person pushes a commit
# of their own to main during the burst; the run fails unless main keeps
# every one.
BENCH_PERSON ?=
# BENCH_PROFILE, when set, is where sluice's profiles of the burst go:
# $(BENCH_PROFILE)-<process>-NNN.pprof (CPU) and -NNN.heap, for go tool pprof.
BENCH_PROFILE ?=

.PHONY: bench-scale
bench-scale: tools ## Time sluice adopting BENCH_KUSTOMIZATIONS × BENCH_APPS Deployments (100 × 10) against Argo Rollouts alone, on a fresh stack.
	$(BUILD_SLUICE)
	go build -o $(BIN)/bench-scale ./e2e/cmd/bench-scale
	$(BIN)/bench-scale --bin $(BIN) --root $(CURDIR) --sluice $(BIN)/sluice \
		--kustomizations $(BENCH_KUSTOMIZATIONS) --apps-per-kustomization $(BENCH_APPS) \
		--shards $(BENCH_SHARDS) --timeout $(BENCH_TIMEOUT) --idle $(BENCH_IDLE) \
		$(if $(BENCH_PERSON),--person-pushes-every $(BENCH_PERSON)) \
		$(if $(BENCH_PROFILE),--cpu-profile $(BENCH_PROFILE))

.PHONY: bench-scale-small
bench-scale-small: tools ## bench-scale at 4 × 5 apps with a person pushing every 2 seconds, failing when a phase takes over 3 minutes.
	$(MAKE) bench-scale BENCH_KUSTOMIZATIONS=4 BENCH_APPS=5 BENCH_SHARDS=1 BENCH_TIMEOUT=3m BENCH_IDLE=20s BENCH_PERSON=2s
