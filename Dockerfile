# Static relayd binary on a distroless base, running as a non-root user.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# VERSION names the build in relay_build_info (docker build --build-arg VERSION=v1.2.3).
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X github.com/desfire-relay/relay/server.Version=${VERSION}" -o /out/relayd ./server/cmd/relayd

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/relayd /usr/local/bin/relayd
USER 65532:65532
WORKDIR /var/lib/relay
ENV RELAY_ADDR=:8080 RELAY_DATA_DIR=/var/lib/relay
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/relayd"]
