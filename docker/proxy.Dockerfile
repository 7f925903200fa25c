# skiff-proxy: docker build -f docker/proxy.Dockerfile -t skiff-proxy .
FROM debian:bookworm AS build
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      g++ cmake ninja-build pkg-config ca-certificates \
      libcpprest-dev nlohmann-json3-dev libgrpc++-dev libprotobuf-dev protobuf-compiler \
      protobuf-compiler-grpc libspdlog-dev libre2-dev libyaml-cpp-dev libboost-dev libssl-dev \
      libgoogle-perftools-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DSKIFF_BUILD_TESTS=OFF \
      -DSKIFF_BUILD_BENCH=OFF \
    && cmake --build /build --target skiff-proxy

FROM debian:bookworm-slim
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates libgrpc++1.51 libprotobuf32 libspdlog1.10 libre2-9 libgoogle-perftools4 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /build/proxy/skiff-proxy /usr/local/bin/
USER 65532:65532
EXPOSE 8080 15000 15090
ENTRYPOINT ["/usr/local/bin/skiff-proxy"]
