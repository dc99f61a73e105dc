// Shared by every fuzz target (compiled into each binary).
#if canImport(Glibc)
import Glibc
#endif

/// The input as bytes.
func bytes(_ data: UnsafePointer<UInt8>?, _ size: Int) -> [UInt8] {
    guard let data, size > 0 else { return [] }
    return Array(UnsafeBufferPointer(start: data, count: size))
}

/// A broken property: printed, then a trap, which libFuzzer reports as a crash with the input.
func violated(_ what: String) -> Never {
    let message = "fuzz property violated: \(what)\n"
    _ = message.withCString { write(2, $0, strlen($0)) }
    abort()
}

/// A cheap running hash of output bytes (FNV-1a), to compare outputs without keeping them.
struct Fingerprint: Equatable {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    var count = 0
    mutating func add(_ bytes: UnsafeRawBufferPointer) {
        for b in bytes { hash = (hash ^ UInt64(b)) &* 0x100_0000_01b3 }
        count += bytes.count
    }
}

/// Path rules every index entry keeps: relative, no empty, "." or ".." part, no trailing "/".
func isNormalPath(_ path: String) -> Bool {
    if path.isEmpty { return true }
    let parts = Array(path.utf8).split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
    return parts.allSatisfy { !$0.isEmpty && !$0.elementsEqual(".".utf8) && !$0.elementsEqual("..".utf8) }
}
