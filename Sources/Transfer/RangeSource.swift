import OCI
import Registry

/// Where a ranged download's bytes come from: the registry (`RegistryClient`), or in tests a
/// source whose pace and failures the test decides.
public protocol RangeSource: Sendable {
    /// Hands `range` of the blob to `body` piece by piece, with each piece's offset in the blob.
    func readRange(_ descriptor: Descriptor, _ range: Range<Int64>, from endpoints: [Endpoint], reference: Reference,
                   _ body: (UnsafeRawBufferPointer, Int64) throws -> Void) async throws
}

extension RegistryClient: RangeSource {}
