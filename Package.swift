// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "imgvol",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "imgvol", targets: ["imgvol"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-crypto", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
        .package(url: "https://github.com/grpc/grpc-swift-2", from: "2.4.3"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf", from: "2.4.1"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport", from: "2.9.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        // C libraries, each behind one module map.
        .systemLibrary(name: "CArchive", providers: [.apt(["libarchive-dev"])]),
        .systemLibrary(name: "CFuse", pkgConfig: "fuse3", providers: [.apt(["libfuse3-dev"])]),
        // ISA-L's inflate: gzip layers decompress faster than with zlib (see GzipInflater).
        .systemLibrary(name: "CISAL", pkgConfig: "libisal", providers: [.apt(["libisal-dev"])]),

        // Syscalls that Swift's Glibc module does not declare.
        .target(name: "CLinux"),
        // The FUSE protocol facts libfuse 3.14 predates (passthrough): the session's I/O hooks.
        .target(name: "CFuseProtocol"),
        // Syscalls with errno-carrying errors; owned file descriptors; the one way to wait
        // (`Monitor`) and the one place blocking work gets a thread (`BlockingThreads`).
        .target(name: "FileIO", dependencies: ["CLinux"]),
        // Pure OCI values: references, digests, manifests, platforms. No I/O.
        .target(name: "OCI", dependencies: [
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        // Chunk checksums: recorded as verified bytes stream into the store, checked before a
        // stored byte is first served or unpacked (ISA-L's CRC-64).
        .target(name: "Integrity", dependencies: ["FileIO", "CISAL"]),
        // 1. The distribution client: auth, mirrors, manifests, blob and range requests.
        .target(name: "Registry", dependencies: [
            "OCI", "FileIO",
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "TOMLKit", package: "TOMLKit"),
        ]),
        // 2. Verified blob streams: resumable partial files, pipes, concurrent Range windows,
        // each hashed as it arrives.
        .target(name: "Transfer", dependencies: ["OCI", "FileIO", "Registry", "Integrity"]),
        // 3. Layers: decompression, tar splitting and indexing (libarchive, ISA-L).
        // libarchive is linked statically: only the objects imgvol calls come in (tar, gzip,
        // zstd), not the shared library's dependencies (libxml2, and through it ICU's 30 MB of
        // data), whose loading would be a third of a cold `imgvol mount`.
        .target(name: "Layers", dependencies: ["OCI", "FileIO", "Integrity", "CArchive", "CISAL"],
                linkerSettings: [.linkedLibrary(":libarchive.a"), .linkedLibrary("z"), .linkedLibrary("zstd")]),
        // 4. The on-disk content-addressed cache; the one owner of its layout.
        .target(name: "Store", dependencies: ["OCI", "FileIO", "Integrity", "Layers"]),
        // 5. The merged read-only tree of a stored image, unpacking, and the FUSE server.
        .target(name: "ImageFS", dependencies: ["OCI", "FileIO", "Integrity", "Layers", "Store", "CFuse", "CFuseProtocol", "CLinux",
            .product(name: "Logging", package: "swift-log")]),
        // Orchestration of 1-4: a pull (and a lazy mount's pull), one session type per front end.
        .target(name: "Pull", dependencies: ["OCI", "FileIO", "Registry", "Transfer", "Layers", "Store", "ImageFS",
            .product(name: "Logging", package: "swift-log")]),
        // Orchestration of 5: mount servers in the background, their records and readiness.
        .target(name: "Mounts", dependencies: ["OCI", "FileIO", "CLinux", "Integrity", "Store", "ImageFS", "Pull",
            .product(name: "Logging", package: "swift-log")]),
        // Front ends. The Docker/podman volume plugin API over a unix socket.
        .target(name: "VolumePlugin", dependencies: ["Mounts", "Pull", "OCI", "FileIO", "Store", "Registry",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log")]),
        // Generated CSI v1 (Identity + Node) messages and gRPC stubs; regenerate with hack/gen-csi-proto.
        .target(name: "CSIProto", dependencies: [
            .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            .product(name: "GRPCCore", package: "grpc-swift-2"),
            .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
        ]),
        // The Kubernetes CSI node plugin: Identity and Node services, published-volume state, metrics.
        .target(name: "CSI", dependencies: ["CSIProto", "Mounts", "Pull", "OCI", "FileIO", "Store", "Registry", "Layers", "ImageFS",
            .product(name: "GRPCCore", package: "grpc-swift-2"),
            .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport"),
            .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
            .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log")]),
        .executableTarget(name: "imgvol", dependencies: [
            "Mounts", "Pull", "VolumePlugin", "CSI", "OCI", "Registry", "Store", "ImageFS",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),

        // Fixtures shared by the test targets (tars written by an independent writer).
        .target(name: "TestSupport", path: "Tests/TestSupport"),
        .testTarget(name: "FileIOTests", dependencies: ["FileIO", "TestSupport"]),
        .testTarget(name: "IntegrityTests", dependencies: ["Integrity", "FileIO", "TestSupport"]),
        .testTarget(name: "TransferTests", dependencies: ["Transfer", "Registry", "OCI", "FileIO"]),
        .testTarget(name: "OCITests", dependencies: ["OCI"]),
        .testTarget(name: "RegistryTests", dependencies: ["Registry", "OCI"]),
        .testTarget(name: "LayersTests", dependencies: ["Layers", "OCI", "FileIO", "TestSupport"]),
        .testTarget(name: "StoreTests", dependencies: ["Store", "Integrity", "Layers", "OCI"]),
        .testTarget(name: "ImageFSTests", dependencies: ["ImageFS", "Layers", "OCI", "Store", "TestSupport"]),
        .testTarget(name: "CSITests", dependencies: ["CSI", "CSIProto", "FileIO", "Mounts", "Pull", "OCI", "Registry", "Store",
            .product(name: "GRPCCore", package: "grpc-swift-2"),
            .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport"),
            .product(name: "Logging", package: "swift-log")]),
    ]
)
