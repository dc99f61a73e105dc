import OCI
import Registry

/// A blob whose bytes a hasher follows as they arrive (`RangedBlob`, `RangedStream`): the
/// same check ends both, and a mismatch fails every reader still waiting on the blob.
protocol HashedDownload: AnyObject, Sendable {
    var descriptor: Descriptor { get }
    var failureMessage: String? { get }
    func fail(_ message: String)
}

extension HashedDownload {
    /// Waits for the hasher (nil: the download failed first) and compares its digest.
    func checkDigest(_ hashing: Task<Digest?, any Error>, reference: Reference) async throws {
        guard let actual = try await hashing.value else {
            throw RegistryError(.network, failureMessage ?? "downloading \(descriptor.digest) failed")
        }
        guard actual == descriptor.digest else {
            let message = "blob \(descriptor.digest) of \(reference) failed verification: its bytes hash to \(actual); the registry's copy is corrupt"
            fail(message)
            throw RegistryError(.digestMismatch, message)
        }
    }
}
