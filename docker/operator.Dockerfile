# skiff-operator: docker build -f docker/operator.Dockerfile -t skiff-operator .
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
    && cmake --build /build --target skiff-operator skiffctl

FROM debian:bookworm-slim
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates libcpprest2.10 libgrpc++1.51 libprotobuf32 libspdlog1.10 libre2-9 \
      libyaml-cpp0.7 libgoogle-perftools4 libssl3 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /build/operator/skiff-operator /build/cli/skiffctl /usr/local/bin/
USER 65532:65532
EXPOSE 15010 15014
ENTRYPOINT ["/usr/local/bin/skiff-operator"]
