# The operator image for a usual registry build (the local cluster uses hack/image.sh, which
# needs no Docker engine).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bin loopservice-operator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/loopservice-operator /usr/local/bin/loopservice-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/loopservice-operator"]
