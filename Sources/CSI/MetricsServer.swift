import Logging
import NIOCore
import NIOHTTP1
import NIOPosix

/// Serves `GET /metrics` (Prometheus text format) on `--metrics-address HOST:PORT`; every
/// other path is 404. A few lines of NIO rather than a web framework: it is the only page.
struct MetricsServer: Sendable {
    let host: String
    let port: Int
    let metrics: CSIMetrics
    let logger: Logger

    init(address: String, metrics: CSIMetrics, logger: Logger) throws(CSIError) {
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]),
              (0...65535).contains(port) else {
            throw .invalidArgument("metrics address \(address) is not HOST:PORT (e.g. 127.0.0.1:9810)")
        }
        var host = String(address[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        self.host = host.isEmpty ? "0.0.0.0" : host
        self.port = port
        self.metrics = metrics
        self.logger = logger
    }

    typealias Channel = NIOAsyncChannel<NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>, Never>

    func bind() async throws -> Channel {
        try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    return try NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>(wrappingChannelSynchronously: channel)
                }
            }
    }

    func serve(_ server: Channel) async throws {
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
                for try await part in inbound {
                    switch part {
                    case .head(let h): head = h
                    case .body: continue
                    case .end:
                        guard let head else { continue }
                        let path = head.uri.split(separator: "?").first.map(String.init) ?? head.uri
                        let found = head.method == .GET && path == "/metrics"
                        let body = found ? metrics.render() : Array("not found; metrics are at /metrics\n".utf8)
                        var headers = HTTPHeaders()
                        headers.add(name: "Content-Type", value: found ? "text/plain; version=0.0.4; charset=utf-8" : "text/plain")
                        headers.add(name: "Content-Length", value: String(body.count))
                        try await outbound.write(.head(HTTPResponseHead(version: head.version, status: found ? .ok : .notFound, headers: headers)))
                        try await outbound.write(.body(.byteBuffer(ByteBuffer(bytes: body))))
                        try await outbound.write(.end(nil))
                        if !head.isKeepAlive { return }
                    }
                }
            }
        } catch {
            logger.debug("metrics connection closed: \(error)")
        }
    }
}
