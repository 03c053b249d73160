# spikeserve: two commands set everything up.
#   make run    creates what is missing (the .venv with onnxruntime, the release build), then serves models/
#   make test   creates what is missing, then runs every test: Rust and Python
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.installed
# The server. The load tools (bench, soak, infer) are target/release/spikeserve-tools: scripts and
# tests find them beside $(BIN), or at $$SPIKESERVE_TOOLS_BIN.
BIN := target/release/spikeserve
HTTP_ADDR ?= 0.0.0.0:8000
MODELS ?= models
CARGO_FLAGS := --locked

# The library inside the pinned onnxruntime wheel; expanded when a recipe runs (after the venv exists).
ORT_LIBRARY = $(shell $(PY) -c 'import glob, os, onnxruntime; print(sorted(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), "capi", "libonnxruntime.so.*")))[-1])')

.PHONY: help venv build run tools openapi errors-doc train-nmnist train-dvs-gesture soak fuzz bench-engine bench-policies bench-peers bench-overhead bench-anytime bench-deadlines triton-peer bench-triton test test-rust test-python lint bench study calibrate calibrate-policies train-nir-example train-digits train-event-digits train-digits-tet train-digits-str train-event-digits-tet train-event-digits-str compare train-all clean

help:
	@echo "Set-up (the two commands):"
	@echo "  make run                 serve models/ on $(HTTP_ADDR) (creates .venv and the release build if missing)"
	@echo "  make test                every test, Rust and Python, with fmt/clippy/ruff (= lint test-rust test-python)"
	@echo "Parts:"
	@echo "  make venv | build        the Python environment (.venv) | the release build (server and spikeserve-tools)"
	@echo "  make lint                cargo fmt, clippy, rustdoc (broken doc links denied), ruff"
	@echo "  make test-rust | test-python   one half of make test"
	@echo "  make tools               Debian's prometheus (promtool, a real Prometheus) and chromium (browser tests)"
	@echo "  make openapi             regenerate docs/openapi.json from the code"
	@echo "  make errors-doc          regenerate docs/errors.md (every error code) from the code"
	@echo "Benchmarks and load (minutes to hours; figures in BENCHMARKS.md / RELIABILITY.md):"
	@echo "  make bench               bench-engine bench-peers bench-overhead bench-anytime"
	@echo "  make bench-engine        the engine against a raw ONNX Runtime loop, 1..256 clients"
	@echo "  make bench-policies      a step plus each exit policy's decisions, batch 1 and 64, against the cutoff"
	@echo "  make bench-peers         the server against the alternatives (floors, the FastAPI peer)"
	@echo "  make bench-overhead      one client's fixed cost per request, by model size"
	@echo "  make bench-anytime       every held-out sample through the server, thresholds, budgets and exit policies, against offline"
	@echo "  make bench-deadlines     latency budgets under overload: deadline-aware admission against FIFO"
	@echo "  make triton-peer         install the NVIDIA Triton peer (.venv-triton: tritonserver, its Python backend's imports)"
	@echo "  make bench-triton        the server against Triton (dynamic batcher, iterative sequences), same KServe v2 requests"
	@echo "  make soak                SOAK_SECONDS / SOAK_RUNS of every door under faults, then SIGTERM under load"
	@echo "  make fuzz                the request decoders under cargo fuzz (FUZZ_SECONDS each)"
	@echo "Models:"
	@echo "  make train-digits | train-event-digits   retrain models/digits | models/event-digits"
	@echo "  make train-digits-tet | train-digits-str | train-event-digits-tet | train-event-digits-str   the ensembles"
	@echo "  make compare             the TET/STR comparisons (models/*-comparison.*)"
	@echo "  make train-all           every shipped digits/event-digits model, then compare"
	@echo "  make train-nmnist | train-dvs-gesture     the papers' data sets, from DATA_DIR"
	@echo "  make train-nir-example   models/digits-snntorch: trained in snnTorch, imported from NIR (spikeserve-import)"
	@echo "  make study               the STR study on mnist-events (hours): report, and the shipped models/mnist-events"
	@echo "  make calibrate           re-calibrate the shipped digits and event-digits models (budget -> threshold)"
	@echo "  make calibrate-policies  fit and calibrate every shipped model's exit policies (exit-policies.json)"
	@echo "  make clean               remove the build and the venv"

# --no-cache-dir: a CI machine's disk is small, and a cached copy of torch's CUDA wheels would double
# the 5 GB the environment needs.
PIP_INSTALL := $(VENV)/bin/pip install --quiet --no-cache-dir

$(VENV_STAMP): training/requirements.txt training/requirements-torch.txt training/requirements-nir.txt training/pyproject.toml clients/python/pyproject.toml $(wildcard clients/python/src/spikeserve_client/*.py)
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip
	$(PIP_INSTALL) -r training/requirements.txt
	$(PIP_INSTALL) --no-deps -r training/requirements-torch.txt
	# The NIR importer's frameworks (the fidelity tests), lean: their real dependencies are pinned above.
	$(PIP_INSTALL) --no-deps -r training/requirements-nir.txt
	# spikeserve-import, the console command of the training package (editable: it runs this checkout's code).
	$(PIP_INSTALL) --no-build-isolation --no-deps -e training
	# The Python client (clients/python), its dependencies pinned above; a plain install, no build copies kept.
	$(PIP_INSTALL) --no-build-isolation --no-deps ./clients/python
	rm -rf clients/python/build
	touch $@

venv: $(VENV_STAMP)

# Both binaries: the tests and benchmarks drive the server with the tools.
build:
	cargo build --release $(CARGO_FLAGS) --workspace

run: venv build
	ORT_DYLIB_PATH="$(ORT_LIBRARY)" $(BIN) serve --models $(MODELS) --http-addr $(HTTP_ADDR)

PY_TEST_DIRS := deploy benchmarks/python tests/clients tests/openapi tests/browser clients/python/tests tests/gpu_bundle

lint: venv
	cargo fmt --all --check
	cargo clippy --workspace --all-targets $(CARGO_FLAGS) -- -D warnings
	RUSTDOCFLAGS="-D rustdoc::broken_intra_doc_links -D rustdoc::private_intra_doc_links" cargo doc --workspace --no-deps --document-private-items $(CARGO_FLAGS)
	cd training && ../$(VENV)/bin/ruff check . && ../$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check --config training/pyproject.toml $(PY_TEST_DIRS) benchmarks clients
	$(VENV)/bin/ruff format --check --config training/pyproject.toml $(PY_TEST_DIRS) benchmarks clients

# Debian's prometheus package (promtool for the deploy checks, a real Prometheus for the metrics test) and
# chromium (the browser tests).
tools:
	scripts/ensure-prometheus.sh
	scripts/ensure-chromium.sh

# The workspace: the server's tests run the tools' binary too, and cargo builds it for them.
test-rust: venv tools
	ORT_DYLIB_PATH="$(ORT_LIBRARY)" cargo test --release $(CARGO_FLAGS) --workspace

# The Python tests drive the release binary too (contract refusals), so they run after the Rust build.
# The training job's tests, then the deploy manifests, the Python benchmark peers, and Triton's own
# client against the server.
test-python: venv build tools
	cd training && SPIKESERVE_BIN=../$(BIN) ORT_DYLIB_PATH="$(ORT_LIBRARY)" ../$(PY) -m pytest
	SPIKESERVE_BIN=$(BIN) ORT_DYLIB_PATH="$(ORT_LIBRARY)" PYTHONPATH=training $(PY) -m pytest -q $(PY_TEST_DIRS)

test: lint test-rust test-python

# Regenerates docs/errors.md from the error type (a unit test keeps the two in step; no ONNX Runtime needed).
errors-doc:
	UPDATE_ERRORS_DOC=1 cargo test --release $(CARGO_FLAGS) --lib error_catalogue

# Regenerates docs/openapi.json from the running code (a test keeps the two in step).
openapi: venv
	UPDATE_OPENAPI=1 ORT_DYLIB_PATH="$(ORT_LIBRARY)" cargo test --release $(CARGO_FLAGS) --workspace --test sse_openapi the_openapi_document

# Every benchmark, results in BENCHMARKS.md and benchmarks/results/:
#   the engine (raw ort loop, engine alone, 1..256 clients with batching on and off),
#   the server against the alternatives (Rust and Python floors, batching off, the FastAPI peer),
#   and the anytime evaluation of every shipped model through the server over gRPC (fails if any
#   sample's exit timestep differs from the training job's offline evaluation).
bench: bench-engine bench-peers bench-overhead bench-anytime

# Load and faults (minutes; not part of `make test`): 256 clients mixing every door with
# cancellations, disconnects and a model reload, then SIGTERM under load. Figures in RELIABILITY.md.
# SOAK_SECONDS (default 180) per run, SOAK_RUNS (default 1) runs in a row, each on fresh servers.
soak:
	scripts/soak.sh $(or $(SOAK_SECONDS),180) $(or $(SOAK_RUNS),1)

# The request decoders under cargo fuzz (nightly), FUZZ_SECONDS per target (default 60).
fuzz:
	scripts/fuzz.sh $(FUZZ_SECONDS)

bench-engine: venv
	ORT_DYLIB_PATH="$(ORT_LIBRARY)" cargo bench $(CARGO_FLAGS) --bench engine

# One step plus every row's exit decision, by exit policy, at batch 1 and 64 (ratios against the cutoff).
bench-policies: venv
	ORT_DYLIB_PATH="$(ORT_LIBRARY)" cargo bench $(CARGO_FLAGS) --bench exit_policies

bench-peers: venv build
	ORT_DYLIB_PATH="$(ORT_LIBRARY)" $(PY) benchmarks/run_bench.py

# The NVIDIA Triton peer (benchmarks/triton-peer/README.md): its own venv, since pytriton's tritonserver wants
# numpy < 2. Only the standard library runs the installer.
TRITON_STAMP := .venv-triton/.installed
$(TRITON_STAMP): benchmarks/triton-peer/requirements.txt benchmarks/triton-peer/requirements-stub.txt benchmarks/triton-peer/peer.py
	$(PYTHON) benchmarks/triton-peer/peer.py install

triton-peer: $(TRITON_STAMP)

# spikeserve against Triton serving the same step graph, over KServe HTTP then gRPC (about 35 minutes
# each; BENCH_TRITON_FLAGS=--quick: a minute or two each).
bench-triton: venv build triton-peer
	ORT_DYLIB_PATH="$(ORT_LIBRARY)" $(PY) benchmarks/triton-peer/bench_triton.py $(BENCH_TRITON_FLAGS)
	ORT_DYLIB_PATH="$(ORT_LIBRARY)" $(PY) benchmarks/triton-peer/bench_triton.py --protocol kserve-grpc --name triton-grpc $(BENCH_TRITON_FLAGS)

# One client through the server against the in-process floor, on models from digits to the papers' VGGSNN.
bench-overhead: venv build
	ORT_DYLIB_PATH="$(ORT_LIBRARY)" $(PY) benchmarks/overhead.py

# Latency budgets under overload: deadline-aware admission against FIFO, goodput per class (minutes).
bench-deadlines: venv build
	ORT_DYLIB_PATH="$(ORT_LIBRARY)" $(PY) benchmarks/deadlines.py \
		--json benchmarks/results/deadlines.json --markdown benchmarks/results/deadlines.md

bench-anytime: venv build
	ORT_DYLIB_PATH="$(ORT_LIBRARY)" PYTHONPATH=training $(PY) benchmarks/anytime_eval.py --start \
		--budgets 0.1 0.25 0.5 1 2 --policies --levels 0.9 0.95 \
		--json benchmarks/results/anytime_eval.json --markdown benchmarks/results/anytime_eval.md \
		--plot benchmarks/results/anytime_eval.png

train-digits: venv
	cd training && ../$(PY) -m spiketrain.train --dataset digits --timesteps 8 --out ../models/digits

# The STR study on mnist-events (real MNIST through the simulated event camera): alpha screen, TET against
# STR(alpha*) on 8 paired seeds, ablations, RCS; then the report (models/mnist-events-comparison.*) and the
# shipped ensemble (models/mnist-events, the recipe that wins on the calibration split). Hours of CPU, two
# single-threaded runs at a time, niced; rerunning resumes where it stopped (runs in training/.cache/study).
study: venv
	cd training && ../$(PY) -m spiketrain.study train --root .cache/study --jobs 2
	cd training && ../$(PY) -m spiketrain.study ship --root .cache/study

# Issue 30's early-answers screen: TET and the losses on the running mean (EARLY_ARMS), 2 seeds, one run
# at a time, tabulated on the calibration split only; resumable. Not part of `study` or CI.
.PHONY: study-early
study-early: venv
	cd training && ../$(PY) -m spiketrain.study early-screen --root .cache/study --jobs 1 --nice 19 --out .cache/study/early-screen

# Issue 30's paired stage: TET and the screen's candidates (EARLY_CANDIDATES) on 8 paired seeds, then the
# test-split report (models/mnist-events-early-study.*) and the shipping decision; `study-early-ship` then
# rebuilds models/mnist-events from the recipe that passes the gates (nothing when none does). Hours of CPU.
.PHONY: study-early-paired study-early-ship
study-early-paired: venv
	cd training && ../$(PY) -m spiketrain.study early-paired --root .cache/study --jobs 2 --nice 19 --out ../models/mnist-events-early-study
study-early-ship: study-early-paired
	cd training && ../$(PY) -m spiketrain.study early-ship --root .cache/study --out ../models/mnist-events-early-study --model ../models/mnist-events

# Re-calibrates the shipped single models (budget -> threshold, default = the 0.5 pt threshold) without retraining.
calibrate: venv
	cd training && ../$(PY) -m spiketrain.calibrate --model ../models/digits ../models/event-digits
	$(MAKE) calibrate-policies

# Fits and calibrates every shipped model's exit policies (exit-policies.json, the card's "Exit policies"
# section, eval.json's exit_policies and exit-policies.png); minutes, mostly stepping the split's samples.
POLICY_MODELS := digits digits-tet digits-str event-digits event-digits-tet event-digits-str mnist-events
calibrate-policies: venv
	cd training && ../$(PY) -m spiketrain.policy_calibration --model $(addprefix ../models/,$(POLICY_MODELS))

# The worked NIR example: a spiking MLP trained in snnTorch on digits (about a minute), exported to NIR,
# imported with spikeserve-import and calibrated on its held-out split (models/digits-snntorch; docs/import.md).
train-nir-example: venv
	cd training && ../$(PY) -m spiketrain.nirimport.example --out ../models/digits-snntorch

train-event-digits: venv
	cd training && ../$(PY) -m spiketrain.train --dataset event-digits --timesteps 10 --epochs 30 --out ../models/event-digits

# Three seeds of one recipe, served together as one ensemble:
# $(call train-ensemble,DATASET,TIMESTEPS,EPOCHS,REG,ALPHA,MODEL-DIR)
SEEDS := 0 1 2
define train-ensemble
cd training && for seed in $(SEEDS); do \
	../$(PY) -m spiketrain.train --dataset $(1) --timesteps $(2) --epochs $(3) --reg $(4) --alpha $(5) \
		--seed $$seed --out ../models/$(6)/seed-$$seed || exit 1; \
done && ../$(PY) -m spiketrain.ensemble --out ../models/$(6) --members $(foreach s,$(SEEDS),seed-$(s))
endef

STR_ALPHA ?= 0.5

train-digits-tet: venv
	$(call train-ensemble,digits,8,40,none,0,digits-tet)

train-digits-str: venv
	$(call train-ensemble,digits,8,40,str,$(STR_ALPHA),digits-str)

train-event-digits-tet: venv
	$(call train-ensemble,event-digits,10,30,none,0,event-digits-tet)

train-event-digits-str: venv
	$(call train-ensemble,event-digits,10,30,str,$(STR_ALPHA),event-digits-str)

# STR against TET, mean ± std over the seeds, as a table and a plot (models/COMPARISON.md).
compare: venv
	cd training && for data in digits event-digits; do \
		../$(PY) -m spiketrain.compare --title "$$data: anytime accuracy against timesteps" \
			--group TET $(foreach s,$(SEEDS),../models/$$data-tet/seed-$(s)) \
			--group STR $(foreach s,$(SEEDS),../models/$$data-str/seed-$(s)) \
			--markdown ../models/$$data-comparison.md --plot ../models/$$data-comparison.png || exit 1; \
	done

# The real data sets with the papers' architectures (VGGSNN for the event sets, ResNet-19 for CIFAR-10),
# for machines that hold the data under DATA_DIR (layouts in training/README.md; nothing is downloaded).
# Not part of train-all, and far too slow for two CPU cores.
DATA_DIR ?= data
.PHONY: train-nmnist train-dvs-gesture train-cifar10-dvs train-cifar10

train-nmnist: venv
	cd training && ../$(PY) -m spiketrain.train --dataset nmnist --data-dir $(abspath $(DATA_DIR)) \
		--timesteps 10 --epochs 100 --batch-size 64 --lr 1e-3 --out ../models/nmnist

train-dvs-gesture: venv
	cd training && ../$(PY) -m spiketrain.train --dataset dvs-gesture --data-dir $(abspath $(DATA_DIR)) \
		--timesteps 20 --epochs 200 --batch-size 16 --lr 1e-3 --out ../models/dvs-gesture

train-cifar10-dvs: venv
	cd training && ../$(PY) -m spiketrain.train --dataset cifar10-dvs --data-dir $(abspath $(DATA_DIR)) \
		--timesteps 10 --epochs 200 --batch-size 32 --lr 1e-3 --out ../models/cifar10-dvs

train-cifar10: venv
	cd training && ../$(PY) -m spiketrain.train --dataset cifar10 --data-dir $(abspath $(DATA_DIR)) \
		--timesteps 4 --epochs 200 --batch-size 64 --lr 1e-3 --out ../models/cifar10

# Every shipped model, from scratch (about 25 minutes on two cores).
train-all: train-digits train-event-digits train-digits-tet train-digits-str train-event-digits-tet train-event-digits-str compare

clean:
	rm -rf target $(VENV)
