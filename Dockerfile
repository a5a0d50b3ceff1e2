# Builds the sluice image: a static binary on a distroless base, running as
# a non-root user. sluice speaks Git through go-git and needs no git binary;
# its working copies live under /tmp (an emptyDir in config/manager).
FROM golang:1.27.3 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY main.go ./
COPY apis/ apis/
COPY controllers/ controllers/
COPY gitops/ gitops/
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/sluice .

FROM gcr.io/distroless/static:nonroot
COPY --from=build /out/sluice /sluice
USER 65532:65532
ENTRYPOINT ["/sluice"]
