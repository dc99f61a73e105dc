#if canImport(Glibc)
import Glibc
#endif

/// A failed system call: which call, on what path, and the errno, so a message can say exactly
/// what went wrong where.
public struct SystemError: Error, CustomStringConvertible, Sendable, Equatable {
    public let call: String
    public let path: String
    public let errno: Int32

    public init(_ call: String, _ path: String, errno: Int32 = Glibc.errno) {
        self.call = call
        self.path = path
        self.errno = errno
    }

    public var description: String {
        let reason = String(cString: strerror(errno))
        return path.isEmpty ? "\(call): \(reason)" : "\(call) \(path): \(reason)"
    }
}

/// Runs a syscall that returns a negative value on failure, retrying on EINTR, and returns the
/// errno it failed with (nil on success). With `retryingEINTR`, the only places that read
/// errno: right after the call, before anything else can change it.
public func failure<T: BinaryInteger>(of body: () -> T) -> Int32? {
    while true {
        if body() >= 0 { return nil }
        let error = Glibc.errno
        if error != EINTR { return error }
    }
}

/// Runs a syscall that returns -1 on failure, retrying on EINTR.
@inline(__always)
public func retryingEINTR<T: BinaryInteger>(_ call: String, _ path: String, _ body: () -> T) throws(SystemError) -> T {
    while true {
        let r = body()
        if r != -1 { return r }
        if errno == EINTR { continue }
        throw SystemError(call, path)
    }
}
