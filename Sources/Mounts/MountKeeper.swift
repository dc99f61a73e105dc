import CLinux
import FileIO
import Foundation
import ImageFS
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// Holds a mount's /dev/fuse descriptor for the mount's whole life and keeps a server on it
/// (`imgvol __keep`): the kernel keeps a FUSE connection while any process holds its
/// descriptor, so when a server dies (a crash, an OOM kill, SIGKILL) nothing is lost. The next
/// server is started at once on the same descriptor, replays the INIT the kernel sent once, and
/// asks the kernel to resend what the dead one had read and not answered: readers see a stall.
///
/// SIGHUP upgrades in place: the server is stopped, this keeper executes the binary now
/// installed at its path (the same pid, the descriptor kept open across the exec), and its
/// new server takes over. SIGTERM or SIGINT unmount. The keeper never reads the descriptor and
/// holds no state of the session (servers persist it, `MountSession`): it stays small.
public struct MountKeeper {
    public struct Configuration: Sendable {
        /// The binary servers (and an upgraded keeper) are started from: a path, so that a
        /// binary replaced there is the one started next.
        public var executable: String
        public var mountpoint: String
        /// What /proc/mounts shows as the source.
        public var source: String
        /// `imgvol __serve` arguments, without the ones this keeper adds.
        public var serverArguments: [String]
        /// Passed to every server on its standard input (a lazy mount's registry login).
        public var credentials: String?
        public var logLevel: String

        public init(executable: String, mountpoint: String, source: String, serverArguments: [String], credentials: String?,
                    logLevel: String) {
            self.executable = executable
            self.logLevel = logLevel
            self.mountpoint = mountpoint
            self.source = source
            self.serverArguments = serverArguments
            self.credentials = credentials
        }
    }

    public let configuration: Configuration
    public let logger: Logger
    /// Consecutive servers that exit before they serve, before the keeper gives up (and the
    /// mount, its descriptor closed, fails with ENOTCONN).
    static let failedStartLimit = 5

    public init(configuration: Configuration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    /// Mounts (or, upgraded, keeps the descriptor it was handed), serves until unmounted;
    /// returns the exit status. Standard output is the launcher's readiness pipe.
    public func run(adopting adopted: Int32?, restarts: Int) throws -> Int32 {
        let signals = try SignalInbox([SIGTERM, SIGINT, SIGHUP])
        signal(SIGPIPE, SIG_IGN)
        let fd: Int32
        let mount: FuseMount?
        if let adopted {
            fd = adopted
            mount = nil
        } else {
            let made = try FuseMount(mountpoint: configuration.mountpoint, source: configuration.source)
            // Above 3: the descriptor is handed to each server as its descriptor 3.
            let copy = fcntl(made.fd, F_DUPFD_CLOEXEC, 10)
            guard copy >= 0 else { made.detach(); throw SystemError("fcntl", "/dev/fuse") }
            mount = made
            fd = copy
        }
        defer { withExtendedLifetime(mount) {} }
        var announced = adopted != nil
        var generation = restarts
        var failedStarts = 0
        while true {
            let server = try KeptServer.start(configuration, fuseFD: fd, generation: generation, takeOver: generation > 0)
            let outcome = watch(server, signals: signals) {
                failedStarts = 0
                if !announced {
                    announced = true
                    ServerReadiness.signal()
                }
            }
            let connected = FuseMount.isConnected(fd: fd)
            switch outcome {
            case .stop where !connected, .exited where !connected:
                return 0
            case .stop:
                // The server was gone before it could unmount.
                detach()
                return 0
            case .upgrade:
                logger.notice("restarting from \(configuration.executable) (upgrade); server \(server.pid) stopped")
                try reexecute(fd: fd, restarts: generation + 1)
            case .exited(let status, let served):
                guard announced else {
                    // Its own error is the log's last line, which the launcher reports.
                    logger.debug("the first server of \(configuration.mountpoint) exited (\(status)) before it served; unmounting")
                    detach()
                    return 1
                }
                if !served {
                    failedStarts += 1
                    guard failedStarts < Self.failedStartLimit else {
                        logger.critical("\(failedStarts) servers in a row exited before serving \(configuration.mountpoint) (last: \(status)); giving up: the mount now fails with ENOTCONN. See the messages above")
                        return 1
                    }
                    // Back off a little between failed starts; a signal ends the wait.
                    if signals.wait(atMost: 100 * failedStarts) { detach(); return 0 }
                }
                generation += 1
                logger.warning("server \(server.pid) of \(configuration.mountpoint) ended (\(status)); starting server #\(generation) to take over")
            }
        }
    }

    enum Outcome {
        case exited(String, served: Bool)
        case stop
        case upgrade
    }

    /// Waits for the server's readiness (told to `onReady`), its exit, or a signal.
    private func watch(_ started: KeptServer, signals: SignalInbox, onReady: () -> Void) -> Outcome {
        var server = started
        var served = false
        var stopping = false
        var upgrading = false
        while true {
            var fds = [pollfd(fd: server.exit.fd, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: server.readiness?.fd ?? -1, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: signals.fd, events: Int16(POLLIN), revents: 0)]
            if failure(of: { poll(&fds, 3, -1) }) != nil { continue }
            if fds[1].revents != 0, let line = server.readLine() {
                if line { served = true; onReady() }
            }
            if fds[2].revents != 0, let number = signals.next() {
                switch number {
                case SIGHUP:
                    upgrading = true
                    kill(server.pid, SIGKILL)
                default:
                    stopping = true
                    kill(server.pid, SIGTERM)
                }
            }
            if fds[0].revents != 0 {
                let status = server.reap()
                if upgrading { return .upgrade }
                if stopping { return .stop }
                return .exited(status, served: served)
            }
        }
    }

    /// Executes the binary at `executable` as this keeper again (same pid), handing it the
    /// descriptor and, through a pipe, the credentials. Returns only by throwing.
    private func reexecute(fd: Int32, restarts: Int) throws -> Never {
        var arguments = [configuration.executable, "__keep", "--log-level", configuration.logLevel,
                         "--mountpoint", configuration.mountpoint, "--source", configuration.source,
                         "--adopt-fd", String(fd), "--restarts", String(restarts)]
        var input: OpenFile?
        if let credentials = configuration.credentials {
            input = try KeptServer.feed(credentials)
            if let input {
                _ = fcntl(input.fd, F_SETFD, 0)      // handed across the exec
                arguments += ["--creds-fd", String(input.fd)]
            }
        }
        arguments += ["--"] + configuration.serverArguments
        _ = fcntl(fd, F_SETFD, 0)
        var argv = arguments.map { strdup($0) } + [nil]
        withExtendedLifetime(input) { _ = execv(configuration.executable, &argv) }
        throw SystemError("execv", configuration.executable)
    }

    private func detach() { umount2(configuration.mountpoint, Int32(MNT_DETACH)) }

}

/// One server a keeper started: its pid, a pidfd that becomes readable when it exits, and
/// the read end of its readiness pipe (its standard output).
struct KeptServer {
    let pid: Int32
    let exit: OpenFile
    var readiness: OpenFile?

    static func start(_ configuration: MountKeeper.Configuration, fuseFD: Int32, generation: Int, takeOver: Bool) throws -> KeptServer {
        var arguments = [configuration.executable, "__serve"] + configuration.serverArguments
            + ["--fuse-fd", "3", "--keeper", String(getpid()), "--restarts", String(generation)]
        if takeOver { arguments.append("--take-over") }
        if configuration.credentials != nil { arguments.append("--creds-from-stdin") }
        let (readEnd, writeEnd) = try pipe("readiness")
        let stdinFile: OpenFile
        if let credentials = configuration.credentials {
            stdinFile = try feed(credentials)
        } else {
            stdinFile = try OpenFile(path: "/dev/null", flags: O_RDONLY)
        }
        var argv = arguments.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        let pid = imgvol_spawn(configuration.executable, &argv, stdinFile.fd, writeEnd.fd, STDERR_FILENO, fuseFD)
        writeEnd.close()
        stdinFile.close()
        guard pid > 0 else { throw SystemError("posix_spawn", configuration.executable, errno: -pid) }
        let exitFD = imgvol_pidfd_open(pid)
        guard exitFD >= 0 else { throw SystemError("pidfd_open", "server \(pid)") }
        return KeptServer(pid: pid, exit: OpenFile(adopting: exitFD, path: "pidfd:\(pid)"), readiness: readEnd)
    }

    /// A pipe whose ends do not leak into other children (close-on-exec; the spawn clears it
    /// on the copy it hands the server).
    private static func pipe(_ what: String) throws -> (read: OpenFile, write: OpenFile) {
        var ends: [Int32] = [-1, -1]
        guard Glibc.pipe(&ends) == 0 else { throw SystemError("pipe", what) }
        for end in ends { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
        return (OpenFile(adopting: ends[0], path: what), OpenFile(adopting: ends[1], path: what))
    }

    /// The read end of a pipe holding `credentials` and a newline (a registry login fits in
    /// the pipe's buffer).
    static func feed(_ credentials: String) throws -> OpenFile {
        let (input, feed) = try pipe("credentials")
        let bytes = Array((credentials + "\n").utf8)
        _ = bytes.withUnsafeBytes { write(feed.fd, $0.baseAddress, $0.count) }
        feed.close()
        return input
    }

    /// true: the readiness line came; false: a byte of it; nil: the pipe ended (or failed).
    mutating func readLine() -> Bool? {
        guard let readiness else { return nil }
        var byte: UInt8 = 0
        var n = 0
        if failure(of: { n = read(readiness.fd, &byte, 1); return n }) == nil, n == 1 {
            return byte == UInt8(ascii: "\n")
        }
        readiness.close()
        self.readiness = nil
        return nil
    }

    /// Reaps the exited server; how it ended.
    func reap() -> String {
        var status: Int32 = 0
        _ = failure(of: { waitpid(pid, &status, 0) })
        let signalled = status & 0x7f
        return signalled != 0 ? "killed by signal \(signalled)" : "exit status \((status >> 8) & 0xff)"
    }
}

/// Signals delivered as readable events on a descriptor (a self-pipe its handler writes
/// to, whichever thread the signal lands on), so a keeper waits for its server, its
/// readiness and signals in one poll.
final class SignalInbox {
    let fd: Int32

    init(_ numbers: [Int32]) throws {
        let fd = numbers.withUnsafeBufferPointer { imgvol_signal_pipe($0.baseAddress, Int32($0.count)) }
        guard fd >= 0 else { throw SystemError("sigaction", "keeper") }
        self.fd = fd
    }

    func next() -> Int32? {
        let number = imgvol_read_signal(fd)
        return number > 0 ? number : nil
    }

    /// Waits up to `milliseconds` for a signal; true when one came (it is consumed).
    func wait(atMost milliseconds: Int) -> Bool {
        var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        var ready: Int32 = 0
        guard failure(of: { ready = poll(&entry, 1, Int32(milliseconds)); return ready }) == nil, ready > 0 else { return false }
        return next() != nil
    }

    deinit { close(fd) }
}
