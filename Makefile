# loopservice-operator: build, test and demo on a real local Kubernetes (hack/cluster.sh).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

CLUSTER := hack/cluster.sh
# Release builds are kept outside the work tree when LOOPS_CACHE_DIR/CARGO_TARGET_DIR say so
# (.ci/run does), so a fresh clone does not rebuild every dependency.
CARGO ?= cargo

.PHONY: help
help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

.PHONY: build
build: ## Build the release binaries
	$(CARGO) build --release --bins

.PHONY: plugin
plugin: ## Build the kubectl plugin (kubectl loopservice) and say how to put it on PATH
	$(CARGO) build --release --bin kubectl-loopservice
	@dir="$${CARGO_TARGET_DIR:-target}/release"; case "$$dir" in /*) ;; *) dir="$$PWD/$$dir" ;; esac; \
	echo "built $$dir/kubectl-loopservice"; \
	echo "put it on PATH, e.g.: install -m 0755 $$dir/kubectl-loopservice ~/.local/bin/"; \
	echo "  or for this shell:  export PATH=\"$$dir:\$$PATH\""; \
	echo "then: kubectl loopservice --help"

.PHONY: crd
crd: ## Regenerate the CRD YAML (and the chart's copy) from src/crd.rs
	$(CARGO) run --release --quiet --bin crdgen > crds/loopservice.yaml
	cp crds/loopservice.yaml charts/loopservice-operator/crds/loopservice.yaml

.PHONY: cluster
cluster: ## Bring the local cluster up: the newest Kubernetes, or KUBERNETES_VERSION=1.20 (idempotent)
	$(CLUSTER) up

.PHONY: fake-nodes
fake-nodes: cluster ## Add 5 fake (kwok) nodes to the local cluster, for scale runs
	$(CLUSTER) fake-nodes 5

.PHONY: cluster-down
cluster-down: ## Stop the local cluster and remove its state
	$(CLUSTER) down

.PHONY: lint
lint: ## Formatting and clippy, as CI checks them (no cluster needed)
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy --all-targets --features fault-injection -- -D warnings

.PHONY: test
# Tests that do not apply to the cluster's Kubernetes version are left out by name in the
# nextest filterset, and each run's summary line counts them as skipped, not passed:
#   - a test in a module `from_1_<N>` (named `from_1_25::...`) applies from Kubernetes 1.<N>;
#     the versions are read from tests/*.rs, so a new `mod from_1_<N>` needs no change here;
#   - the chaos tests, in `mod newest_only` of tests/chaos.rs, apply only to the newest version
#     hack/cluster.sh brings up (its DEFAULT_KUBERNETES_VERSION); there they run alone after the
#     rest, and on an older version the one run of all tests counts them skipped.
# The cluster's version is the API server's own (/version). Such a test also checks the version
# itself and fails, saying why, when run by hand where it does not apply: nothing passes that
# checked nothing. (A name filter, not a whole-binary one: nextest counts a binary it leaves out
# in no summary.) A bad-input case that does not apply is counted as skipped by tests/bad_input.rs.
# The tests' operator is built with the `fault-injection` feature (LOOPSERVICE_FAULT); `make
# build`, the image and the chart's binary are not (cargo keeps both builds: no rebuild).
test: cluster build image ## All tests on the local cluster (KUBERNETES_VERSION=1.20 for the oldest)
	hack/ensure-nextest.sh
	$(CLUSTER) fake-nodes 5
	eval "$$($(CLUSTER) env)"; \
	if helm status loopservice-operator -n loopservice-system >/dev/null 2>&1; then \
	  echo "uninstalling the demo's operator: it would run the tests' LoopServices too"; \
	  helm uninstall loopservice-operator -n loopservice-system --wait; \
	fi; \
	minor=$$(kubectl get --raw /version | sed -n 's/.*"minor": *"\([0-9]*\).*/\1/p'); \
	newest=$$(sed -n 's/^DEFAULT_KUBERNETES_VERSION="1\.\([0-9]*\)"$$/\1/p' $(CLUSTER)); \
	[[ "$$minor" =~ ^[0-9]+$$ && "$$newest" =~ ^[0-9]+$$ ]] || { echo "cannot tell the cluster's Kubernetes version ($$minor) or the newest ($$newest)"; exit 1; }; \
	skip=""; \
	for gate in $$(grep -ho '^ *mod from_1_[0-9]\+' tests/*.rs | sed 's/.*from_1_//' | sort -un); do \
	  if ((minor < gate)); then skip="$$skip & not test(/^from_1_$${gate}::/)"; fi; \
	done; \
	if ((minor < newest)); then skip="$$skip & not test(/^newest_only::/)"; else $(CLUSTER) kueue; fi; \
	skip="$$skip & not test(/::soak_/)"; \
	left="$${skip# & }"; echo "Kubernetes 1.$$minor: tests left out (nextest counts them skipped) as they do not apply: $${left:-none}"; \
	pidfile="$${LOOPS_CLUSTER_DIR:-$$HOME/.local/state/loops-cluster}/run/kube-apiserver.pid"; \
	apiserver_pid=$$(cat "$$pidfile"); \
	status=0; \
	if ((minor < newest)); then \
	  echo "chaos tests: none apply to 1.$$minor; this run's summary counts them skipped"; \
	  $(CARGO) nextest run --release --features fault-injection --no-fail-fast --run-ignored all -E "all()$$skip" || status=$$?; \
	  hack/check-alive.sh "$$apiserver_pid" || status=1; \
	  exit $$status; \
	fi; \
	$(CARGO) nextest run --release --features fault-injection --no-fail-fast --run-ignored all -E "not binary(chaos)$$skip" || status=$$?; \
	hack/check-alive.sh "$$apiserver_pid" || status=1; \
	echo "chaos tests: alone, one at a time (they stop and start the API server and etcd)"; \
	$(CARGO) nextest run --release --features fault-injection --no-fail-fast --run-ignored all --test chaos -E "binary(chaos)$$skip" --test-threads 1 || status=$$?; \
	hack/check-alive.sh --restarted "$$(cat "$$pidfile" 2>/dev/null)" || status=1; \
	exit $$status

.PHONY: chaos
chaos: cluster build ## The chaos tests and the soak (100 SIGKILLs, API server restarts; SOAK_KILLS), alone on the newest Kubernetes
	hack/ensure-nextest.sh
	$(CLUSTER) fake-nodes 5
	eval "$$($(CLUSTER) env)"; \
	$(CARGO) nextest run --release --features fault-injection --no-fail-fast --run-ignored all --test chaos --test-threads 1 --no-capture

.PHONY: fuzz
fuzz: ## Property tests with many cases: FUZZ_CASES per property (100000), at most FUZZ_SECONDS each (60)
	PROPTEST_CASES=$${FUZZ_CASES:-100000} FUZZ_SECONDS=$${FUZZ_SECONDS:-60} \
	  $(CARGO) test --release --test fuzz -- --nocapture --test-threads 1

.PHONY: bench
bench: fake-nodes build ## Scale figures beside CronJobs on fake nodes (about 15 min; BENCH_* sizes in benches/scale.rs), plots in target/bench
	eval "$$($(CLUSTER) env)"; $(CARGO) bench --bench scale

.PHONY: bench-steady
bench-steady: fake-nodes build ## Steady load: N loops as LoopServices, as CronJobs, by a bare client (about 15 min; BENCH_STEADY_N/_INTERVAL/_MINUTES), plot in target/bench
	eval "$$($(CLUSTER) env)"; BENCH_PHASES=steady $(CARGO) bench --bench scale

.PHONY: bench-shards
bench-shards: fake-nodes build ## Shards: a shard leader SIGKILLed among 3 (300 loops at 5 s), and each shard's memory with 10,000 LoopServices for 1, 2, 4 shards (about 10 min)
	eval "$$($(CLUSTER) env)"; BENCH_PHASES=failover,shard-memory $(CARGO) bench --bench scale

.PHONY: soak
soak: fake-nodes build ## Soak, not in CI: 1,000 LoopServices at 60 s for an hour, sampled each minute (SOAK_N/_INTERVAL/_MINUTES), plot in target/bench
	eval "$$($(CLUSTER) env)"; BENCH_PHASES=soak $(CARGO) bench --bench scale

.PHONY: bench-memory
bench-memory: ## Print the memory one LoopService costs in the operator's store, metrics and bookkeeping (no cluster)
	$(CARGO) bench --bench memory

.PHONY: bench-fake-nodes
bench-fake-nodes: fake-nodes ## Print how many fake-node Jobs per second the local cluster completes
	eval "$$($(CLUSTER) env)"; $(CARGO) bench --bench fake_nodes

.PHONY: image
image: build ## Build the operator image and import it into the local cluster
	hack/image.sh

.PHONY: demo
demo: cluster image ## Run the operator on the local cluster with Helm and the examples
	hack/demo.sh
