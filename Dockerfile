# adclick images: one per binary, FROM scratch around static binaries.
#
# The binaries are built on the host (CGO_ENABLED=0) by `make images`, which
# then builds each target of this file:
#   docker build --target router -t adclick/router:dev .
# No base image is pulled: a build machine without registry access can build
# them, and the images hold nothing but the binary (no shell, no libc).
#
# Every image runs as the numeric non-root user 65532 (no passwd entry needed).
# /data is created owned by that user, so a Docker named volume or a
# Kubernetes volume mounted there starts writable; /tmp likewise.

FROM scratch AS base
COPY --chown=65532:65532 bin/static/empty/ /data/
COPY --chown=65532:65532 bin/static/empty/ /tmp/
USER 65532:65532
WORKDIR /data
# Flags also read ADCLICK_<FLAG>; aggregators and reducers keep their state in /data.
ENV ADCLICK_DATA_DIR=/data

# adclick: dev, etcd, load and admin (`adclick etcd --data-dir /data --addr 0.0.0.0:2379`).
FROM base AS adclick
COPY bin/static/adclick /adclick
ENTRYPOINT ["/adclick"]

FROM base AS router
COPY bin/static/router /router
EXPOSE 7070 8080 7946
ENTRYPOINT ["/router"]

FROM base AS reducer
COPY bin/static/reducer /reducer
EXPOSE 7272 8282 7946
ENTRYPOINT ["/reducer"]

# The aggregator image also carries /adclick, so a Kubernetes preStop hook
# can run `/adclick admin drain --wait <id>` inside the pod.
FROM base AS aggregator
COPY bin/static/adclick /adclick
COPY bin/static/aggregator /aggregator
EXPOSE 7171 8181 7946
ENTRYPOINT ["/aggregator"]
