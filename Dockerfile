# A wgmesh image for rootless (netstack) members: no shell, no packages,
# one static binary, an unprivileged user, no capabilities or devices
# needed. Build it without pulling anything with `make image`, which
# compiles the binary and prepares this build context in bin/image/.
FROM scratch
COPY wgmesh /wgmesh
# A sticky, world-writable /tmp for the control socket and state, so any
# --user works: the context's rootfs/tmp carries mode 1777 (copying the
# rootfs/ tree keeps the mode of the directories inside it).
COPY rootfs/ /
ENV HOME=/tmp XDG_RUNTIME_DIR=/tmp
USER 65534:65534
ENTRYPOINT ["/wgmesh"]
CMD ["--help"]
