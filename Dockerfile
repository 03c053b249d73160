# spikeserve, CPU image. Build from the repository root:
#   docker build -t spikeserve .
#   docker run --rm -p 8000:8000 -p 8001:8001 spikeserve
# Stage 1 builds the server; stage 2 takes only libonnxruntime from the pinned PyPI wheel (the same
# file `make` uses locally); the runtime stage is a slim Debian with a non-root user.
# HTTP (v1, KServe v2 REST, /metrics) on 8000, gRPC (anytime, KServe v2, health) on 8001.
# The CUDA variant is Dockerfile.cuda.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
COPY benches ./benches
COPY src ./src
# The workspace's other member (the load tools) is read for the manifest but not built: the image
# ships the server alone.
COPY tools ./tools
RUN cargo build --release --locked -p spikeserve

FROM python:3.11-slim-bookworm AS onnxruntime
RUN pip install --no-cache-dir --no-deps --target /wheel onnxruntime==1.31.1

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home spikeserve
COPY --from=build /src/target/release/spikeserve /usr/local/bin/spikeserve
COPY --from=onnxruntime /wheel/onnxruntime/capi/libonnxruntime.so.1.31.1 /opt/onnxruntime/lib/
COPY models /models
ENV ORT_DYLIB_PATH=/opt/onnxruntime/lib/libonnxruntime.so.1.31.1 \
    SPIKESERVE_MODELS=/models \
    SPIKESERVE_HTTP_ADDR=0.0.0.0:8000 \
    SPIKESERVE_GRPC_ADDR=0.0.0.0:8001
USER 10001
EXPOSE 8000 8001
ENTRYPOINT ["spikeserve"]
CMD ["serve"]
