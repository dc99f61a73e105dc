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

        // Syscalls with errno-carrying errors; owned file descriptors.
        .target(name: "CLinux"),
        .target(name: "FileIO", dependencies: ["CLinux"]),
        // Pure OCI values: references, digests, manifests, platforms. No I/O.
        .target(name: "OCI", dependencies: [
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        // The distribution client: auth, mirrors, manifests, verified blob streams.
        .target(name: "Registry", dependencies: [
            "OCI", "FileIO",
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "TOMLKit", package: "TOMLKit"),
        ]),
        // libarchive: decompression and tar indexing of layers.
        // libarchive is linked statically: only the objects imgvol calls come in (tar, gzip,
        // zstd), not the shared library's dependencies (libxml2, and through it ICU's 30 MB of
        // data), whose loading was a fifth of a cold `imgvol mount` (0.22 -> 0.15 s measured).
        .target(name: "Layers", dependencies: ["OCI", "FileIO", "CArchive", "CISAL"],
                linkerSettings: [.linkedLibrary(":libarchive.a"), .linkedLibrary("z"), .linkedLibrary("zstd")]),
        // The on-disk content-addressed cache.
        .target(name: "Store", dependencies: ["OCI", "FileIO", "Layers"]),
        // The merged read-only tree of an image, unpacking, and the FUSE server.
        .target(name: "ImageFS", dependencies: ["OCI", "FileIO", "Layers", "CFuse", "CLinux",
            .product(name: "Logging", package: "swift-log")]),
        // Orchestration shared by the CLI and the CSI plugin: pull, GC, mount bookkeeping.
        .target(name: "ImgvolCore", dependencies: ["OCI", "FileIO", "Registry", "Layers", "Store", "ImageFS",
            .product(name: "Logging", package: "swift-log")]),
        // The Docker/podman volume plugin API over a unix socket.
        .target(name: "VolumePlugin", dependencies: ["ImgvolCore", "OCI", "FileIO", "Store", "Registry",
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
        .target(name: "CSI", dependencies: ["CSIProto", "ImgvolCore", "OCI", "FileIO", "Store", "Registry", "Layers", "ImageFS",
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
            "ImgvolCore", "VolumePlugin", "CSI", "OCI", "Registry", "Store", "ImageFS",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),

        // Fixtures shared by the test targets (tars written by an independent writer).
        .target(name: "TestSupport", path: "Tests/TestSupport"),
        .testTarget(name: "FileIOTests", dependencies: ["FileIO", "TestSupport"]),
        .testTarget(name: "OCITests", dependencies: ["OCI"]),
        .testTarget(name: "RegistryTests", dependencies: ["Registry", "OCI"]),
        .testTarget(name: "LayersTests", dependencies: ["Layers", "OCI", "FileIO", "TestSupport"]),
        .testTarget(name: "StoreTests", dependencies: ["Store", "Layers", "OCI"]),
        .testTarget(name: "ImageFSTests", dependencies: ["ImageFS", "Layers", "OCI", "TestSupport"]),
        .testTarget(name: "ImgvolCoreTests", dependencies: ["ImgvolCore", "FileIO", "Layers", "TestSupport"]),
        .testTarget(name: "CSITests", dependencies: ["CSI", "CSIProto", "ImgvolCore", "OCI", "Registry", "Store",
            .product(name: "GRPCCore", package: "grpc-swift-2"),
            .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport"),
            .product(name: "Logging", package: "swift-log")]),
    ]
)
