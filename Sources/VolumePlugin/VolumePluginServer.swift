import Dispatch
import FileIO
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import OCI
import Store
#if canImport(Glibc)
import Glibc
#endif

/// Serves the volume plugin API on a unix socket (`/run/docker/plugins/imgvol.sock` by
/// default, where podman and docker look for plugins).
public struct VolumePluginServer: Sendable {
    public let socketPath: String
    let driver: VolumeDriver
    let logger: Logger

    public init(socketPath: String, store: ContentStore, logger: Logger) throws {
        self.socketPath = socketPath
        self.driver = try VolumeDriver(store: store, logger: logger)
        self.logger = logger
    }

    public func run() async throws {
        try FileSystem.makeDirectories(FileSystem.parent(of: socketPath))
        try? FileSystem.remove(socketPath)
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(unixDomainSocketPath: socketPath) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    return try NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>(wrappingChannelSynchronously: channel)
                }
            }
        logger.notice("volume plugin listening on \(socketPath)")
        // SIGTERM/SIGINT: remove the socket and exit 0; the mounts keep being served.
        let path = socketPath
        let signals = [SIGTERM, SIGINT].map { number -> any DispatchSourceSignal in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler {
                unlink(path)
                exit(0)
            }
            source.resume()
            return source
        }
        defer { signals.forEach { $0.cancel() } }
        try await withThrowingDiscardingTaskGroup { group in
            try await server.executeThenClose { connections in
                for try await connection in connections {
                    group.addTask { await handle(connection) }
                }
            }
        }
    }

    private func handle(_ connection: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>) async {
        do {
            try await connection.executeThenClose { inbound, outbound in
                var head: HTTPRequestHead?
                var body = ByteBuffer()
                for try await part in inbound {
                    switch part {
                    case .head(let h): head = h; body.clear()
                    case .body(var chunk): body.writeBuffer(&chunk)
                    case .end:
                        guard let head else { continue }
                        let (status, json) = await respond(path: head.uri, body: body)
                        var headers = HTTPHeaders()
                        headers.add(name: "Content-Type", value: VolumePluginAPI.contentType)
                        headers.add(name: "Content-Length", value: String(json.count))
                        try await outbound.write(.head(HTTPResponseHead(version: head.version, status: status, headers: headers)))
                        try await outbound.write(.body(.byteBuffer(ByteBuffer(bytes: json))))
                        try await outbound.write(.end(nil))
                    }
                }
            }
        } catch {
            logger.debug("volume plugin connection closed: \(error)")
        }
    }

    func respond(path: String, body: ByteBuffer) async -> (HTTPResponseStatus, [UInt8]) {
        let bytes = body.getBytes(at: body.readerIndex, length: body.readableBytes) ?? []
        func request() throws -> VolumePluginAPI.NameRequest {
            try JSONCoding.decode(VolumePluginAPI.NameRequest.self, from: bytes, what: "\(path) request")
        }
        do {
            switch path {
            case "/Plugin.Activate":
                return (.ok, JSONCoding.encode(VolumePluginAPI.Activate()))
            case "/VolumeDriver.Capabilities":
                return (.ok, JSONCoding.encode(VolumePluginAPI.Capabilities()))
            case "/VolumeDriver.Create":
                let r = try request()
                logger.info("create \(r.Name)")
                try await driver.create(r.Name, options: r.Opts ?? [:])
                return (.ok, JSONCoding.encode(VolumePluginAPI.ErrorResponse(Err: "")))
            case "/VolumeDriver.Remove":
                let r = try request()
                logger.info("remove \(r.Name)")
                try await driver.remove(r.Name)
                return (.ok, JSONCoding.encode(VolumePluginAPI.ErrorResponse(Err: "")))
            case "/VolumeDriver.Mount":
                let r = try request()
                logger.info("mount \(r.Name) for \(r.ID ?? "?")")
                let path = try await driver.mount(r.Name, id: r.ID ?? "")
                return (.ok, JSONCoding.encode(VolumePluginAPI.MountResponse(Mountpoint: path)))
            case "/VolumeDriver.Unmount":
                let r = try request()
                logger.info("unmount \(r.Name) for \(r.ID ?? "?")")
                try await driver.unmount(r.Name, id: r.ID ?? "")
                return (.ok, JSONCoding.encode(VolumePluginAPI.ErrorResponse(Err: "")))
            case "/VolumeDriver.Path":
                let volume = try await driver.get(try request().Name)
                return (.ok, JSONCoding.encode(VolumePluginAPI.MountResponse(Mountpoint: volume.Mountpoint)))
            case "/VolumeDriver.Get":
                let volume = try await driver.get(try request().Name)
                return (.ok, JSONCoding.encode(VolumePluginAPI.GetResponse(Volume: volume)))
            case "/VolumeDriver.List":
                return (.ok, JSONCoding.encode(VolumePluginAPI.ListResponse(Volumes: await driver.list())))
            default:
                return (.notFound, JSONCoding.encode(VolumePluginAPI.ErrorResponse(Err: "unknown endpoint \(path)")))
            }
        } catch {
            logger.warning("\(path): \(error)")
            return (.internalServerError, JSONCoding.encode(VolumePluginAPI.ErrorResponse(Err: "\(error)")))
        }
    }
}
