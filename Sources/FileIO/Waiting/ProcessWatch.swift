import CLinux
#if canImport(Glibc)
import Glibc
#endif

/// Tells tasks when processes exit, whoever their parent is: one thread polls a pidfd per
/// watched process (and a pipe that wakes it when one is added), and a task waiting for an
/// exit holds no thread. For supervisors of many long-lived processes (the CSI plugin watching
/// every volume's keeper), where a blocking wait per process would hold a thread each.
public final class ProcessWatch: Sendable {
    private struct State {
        var watched: [Int32: Int32] = [:]    // pid → pidfd
        var exited: Set<Int32> = []
        var started = false
    }

    private let state = Monitor(State())
    private let wake: (read: Int32, write: Int32)

    public init() throws(SystemError) {
        var ends: [Int32] = [-1, -1]
        guard pipe(&ends) == 0 else { throw SystemError("pipe", "process watch") }
        for end in ends { _ = fcntl(end, F_SETFD, FD_CLOEXEC); _ = fcntl(end, F_SETFL, O_NONBLOCK) }
        wake = (ends[0], ends[1])
    }

    /// Returns once `pid` has exited (at once when it is not running), or when the task is
    /// cancelled. One waiter per process.
    public func exited(_ pid: Int32) async {
        let fd = imgvol_pidfd_open(pid)
        guard fd >= 0 else { return }
        let start = state.update { s -> Bool in
            if let old = s.watched[pid] { close(old) }
            s.exited.remove(pid)
            s.watched[pid] = fd
            defer { s.started = true }
            return !s.started
        }
        if start {
            do { try BlockingThreads.start { [self] in loop() } } catch { return }
        }
        var byte: UInt8 = 1
        _ = write(wake.write, &byte, 1)
        _ = await state.next { s in s.exited.remove(pid) != nil ? () : nil }
    }

    private func loop() {
        while true {
            let watched = state.read { $0.watched }
            var fds = [pollfd(fd: wake.read, events: Int16(POLLIN), revents: 0)]
                + watched.map { pollfd(fd: $0.value, events: Int16(POLLIN), revents: 0) }
            let pids = [Int32(0)] + watched.map(\.key)
            guard failure(of: { poll(&fds, nfds_t(fds.count), -1) }) == nil else { continue }
            if fds[0].revents != 0 {
                var buffer = [UInt8](repeating: 0, count: 64)
                while read(wake.read, &buffer, buffer.count) > 0 {}
            }
            let gone = fds.indices.dropFirst().filter { fds[$0].revents != 0 }.map { (pids[$0], fds[$0].fd) }
            guard !gone.isEmpty else { continue }
            state.update { s in
                for (pid, fd) in gone where s.watched[pid] == fd {
                    s.watched[pid] = nil
                    close(fd)
                    s.exited.insert(pid)
                }
            }
        }
    }
}
