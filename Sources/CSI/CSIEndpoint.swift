/// The `--endpoint` value: CSI sidecars and kubelet speak gRPC over a unix socket named as
/// `unix:///csi/csi.sock` (also `unix:/path` or a bare path). TCP is refused: the node
/// plugin mounts file systems as root and must not be reachable over the network.
struct CSIEndpoint: Sendable, Equatable {
    let socketPath: String

    init(_ text: String) throws(CSIError) {
        var path = text
        if path.hasPrefix("unix://") {
            path.removeFirst("unix://".count)
        } else if path.hasPrefix("unix:") {
            path.removeFirst("unix:".count)
        } else if path.contains("://") {
            throw .invalidArgument("endpoint \(text) is not a unix socket; use unix:///path/to/csi.sock")
        }
        guard !path.isEmpty else { throw .invalidArgument("endpoint \(text) names no socket path; use unix:///path/to/csi.sock") }
        socketPath = path
    }
}
