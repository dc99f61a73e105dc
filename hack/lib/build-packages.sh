# The Debian packages a build of imgvol needs: headers, pkg-config files and the static
# libraries Package.swift links (libarchive.a pulls in zlib and zstd). hack/demo and
# hack/test both source this, so a fresh machine gets the same set from either.
BUILD_PACKAGES=(fuse3 libfuse3-dev libarchive-dev libisal-dev pkg-config zlib1g-dev libzstd-dev)
