import CLinux
import FileIO
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A mount server started in the background (`imgvol __serve`), and how its launcher learns
/// that it serves: the server's standard output is a pipe on which it writes one line once
/// the kernel's handshake is done. A server that dies first closes the pipe without a line.
/// Its standard error is its log; credentials, if any, go through its standard input.
struct ServerProcess {
    let process: Process
    private let readiness: FileHandle
    let logPath: String

    /// Starts `executable arguments`, logging to `logPath` (created 0600).
    static func start(executable: String, arguments: [String], logPath: String, input: String?) throws -> ServerProcess {
        _ = FileManager.default.createFile(atPath: logPath, contents: nil, attributes: [.posixPermissions: 0o600])
        guard let log = FileHandle(forWritingAtPath: logPath) else {
            throw MountServer.Failure("cannot write the mount log \(logPath)")
        }
        defer { try? log.close() }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let ready = Pipe()
        let stdin = input != nil ? Pipe() : nil
        process.standardInput = stdin ?? FileHandle.nullDevice
        process.standardOutput = ready
        process.standardError = log
        try process.run()
        // The launcher's copy of the write end would keep the pipe open after the server died.
        try? ready.fileHandleForWriting.close()
        if let stdin, let input {
            // A server that exits before reading it is reported through the readiness pipe.
            try? stdin.fileHandleForWriting.write(contentsOf: Array((input + "\n").utf8))
            try? stdin.fileHandleForWriting.close()
        }
        return ServerProcess(process: process, readiness: ready.fileHandleForReading, logPath: logPath)
    }

    /// Waits for the readiness line. Throws with the last line of the log if the server exits
    /// first, and stops it if it is not ready within `limit`.
    func waitUntilReady(within limit: Duration, what: String) async throws {
        let fd = readiness.fileDescriptor
        let outcome = await withTaskGroup(of: Bool?.self) { group in
            group.addTask {
                // true: the line came; false: the pipe closed without one.
                (try? await BlockingThreads.run { Self.readLine(fd) }) ?? false
            }
            group.addTask {
                try? await Task.sleep(for: limit)
                return Task.isCancelled ? false : nil
            }
            let first = await group.next() ?? nil
            if first == nil {
                // Timed out: the server is stopped, which closes the pipe and ends the reader.
                process.terminate()
            }
            group.cancelAll()
            return first
        }
        try? readiness.close()
        switch outcome {
        case true?:
            return
        case false?:
            throw MountServer.Failure("\(what) failed: \(lastLogLine())")
        case nil:
            throw MountServer.Failure("\(what) did not complete in time; see \(logPath)")
        }
    }

    /// Reads until a newline (true) or the end of the pipe (false).
    private static func readLine(_ fd: Int32) -> Bool {
        var byte: UInt8 = 0
        var n = 0
        while failure(of: { n = read(fd, &byte, 1); return n }) == nil, n == 1 {
            if byte == UInt8(ascii: "\n") { return true }
        }
        return false
    }

    private func lastLogLine() -> String {
        guard let bytes = try? FileSystem.readFile(logPath) else { return "no message (the log \(logPath) cannot be read)" }
        let text = String(decoding: bytes, as: UTF8.self)
        return text.split(separator: "\n").last(where: { !$0.isEmpty }).map(String.init) ?? "no message"
    }
}

/// The server's side of the readiness pipe (see `ServerProcess`).
public enum ServerReadiness {
    /// Writes the readiness line to standard output once, then points standard output at
    /// /dev/null: the launcher closes its end when it has read the line, and a later write
    /// would raise SIGPIPE.
    public static func signal() {
        let line: [UInt8] = Array("ready\n".utf8)
        _ = line.withUnsafeBytes { write(STDOUT_FILENO, $0.baseAddress, $0.count) }
        let null = open("/dev/null", O_WRONLY | O_CLOEXEC)
        if null >= 0 {
            dup2(null, STDOUT_FILENO)
            close(null)
        }
    }
}

/// Waits for a process that is not necessarily this one's child (a server started by another
/// `imgvol`) to exit: a pidfd becomes readable when it does.
enum ProcessExit {
    /// True once `pid` has exited (or never existed); false after `limit`.
    static func wait(_ pid: Int32, atMost limit: Duration) async -> Bool {
        var fd: Int32 = -1
        if let error = failure(of: { fd = imgvol_pidfd_open(pid); return fd }) { return error == ESRCH }
        let descriptor = OpenFile(adopting: fd, path: "pidfd:\(pid)")
        let milliseconds = Int32(clamping: limit.components.seconds * 1000 + limit.components.attoseconds / 1_000_000_000_000_000)
        return (try? await BlockingThreads.run {
            var entry = pollfd(fd: descriptor.fd, events: Int16(POLLIN), revents: 0)
            var ready: Int32 = 0
            return failure(of: { ready = poll(&entry, 1, milliseconds); return ready }) == nil && ready > 0
        }) ?? false
    }
}
