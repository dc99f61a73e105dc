import GRPCCore
import Logging

/// One log line and one metrics sample per RPC: method, volume id, target, image, result code
/// and duration. Only these named fields are logged: a request message is never interpolated,
/// since its text form includes `secrets` (registry passwords) and kubelet's service account
/// tokens in `volume_context`.
struct RPCLog: Sendable {
    let logger: Logger
    let metrics: CSIMetrics

    struct Fields: Sendable {
        var volumeID = ""
        var target = ""
        var image = ""
    }

    /// Methods kubelet and the registrar poll; logged at debug when they succeed.
    static let quiet: Set<String> = ["Probe", "GetPluginInfo", "GetPluginCapabilities", "NodeGetCapabilities", "NodeGetInfo", "NodeGetVolumeStats"]

    /// Runs `body`, maps any error to a gRPC status (`CSIError`) and records the outcome.
    func run<T: Sendable>(_ method: String, _ fields: Fields = Fields(), _ body: () async throws -> T) async throws -> T {
        let clock = ContinuousClock()
        let start = clock.now
        do {
            let result = try await body()
            record(method, fields, code: "OK", message: nil, duration: clock.now - start)
            return result
        } catch {
            let failure = CSIError(error)
            record(method, fields, code: failure.code.csiName, message: failure.message, duration: clock.now - start)
            throw failure.rpcError
        }
    }

    private func record(_ method: String, _ fields: Fields, code: String, message: String?, duration: Duration) {
        metrics.rpcFinished(method, code: code, duration: duration)
        let milliseconds = CSIMetrics.nanoseconds(duration) / 1_000_000
        var metadata: Logger.Metadata = ["rpc": "\(method)", "code": "\(code)", "ms": "\(milliseconds)"]
        if !fields.volumeID.isEmpty { metadata["volume"] = "\(fields.volumeID)" }
        if !fields.target.isEmpty { metadata["target"] = "\(fields.target)" }
        if !fields.image.isEmpty { metadata["image"] = "\(fields.image)" }
        let level: Logger.Level
        switch code {
        case "OK": level = Self.quiet.contains(method) ? .debug : .info
        case "INTERNAL", "DATA_LOSS", "UNKNOWN": level = .error
        default: level = .warning
        }
        let text = message.map { "\(method) \(code): \($0)" } ?? "\(method) OK"
        logger.log(level: level, "\(text)", metadata: metadata)
    }
}
