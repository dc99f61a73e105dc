import CLinux
import FileIO
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Upgrading live mounts in place: each keeper executes the binary now installed at its path
/// and its new server takes the session over (`MountKeeper`, SIGHUP). Readers see a stall.
extension MountTable {
    public struct Restarted: Sendable {
        public var mountpoint: String
        public var previous: Int32
        public var server: Int32
    }

    /// Restarts the server of every live mount that has a keeper (a mount served in the
    /// foreground has none, and is skipped), one at a time; returns once each new server
    /// serves. Throws naming the first mount whose new server did not serve in `limit`.
    public func restartServers(within limit: Duration = .seconds(60)) async throws -> [Restarted] {
        var done: [Restarted] = []
        for record in live() {
            guard let keeper = record.keeper, Self.processAlive(keeper) else { continue }
            let server = try await restart(record, keeper: keeper, within: limit)
            done.append(Restarted(mountpoint: record.mountpoint, previous: record.pid, server: server))
        }
        return done
    }

    /// SIGHUP to the keeper, then waits for a record naming a new, running server.
    public func restart(_ record: MountRecord, keeper: Int32, within limit: Duration) async throws -> Int32 {
        let watch = imgvol_watch_renames(store.mountsDir)
        guard watch >= 0 else { throw SystemError("inotify", store.mountsDir) }
        let events = OpenFile(adopting: watch, path: "inotify:\(store.mountsDir)")
        guard failure(of: { kill(keeper, SIGHUP) }) == nil else { throw SystemError("kill", "keeper \(keeper)") }
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline {
            if let now = self.record(for: record.mountpoint), now.pid != record.pid, (now.restarts ?? 0) > (record.restarts ?? 0),
               Self.processAlive(now.pid) {
                return now.pid
            }
            guard Self.processAlive(keeper) else {
                throw MountServer.Failure("restarting the server of \(record.mountpoint): its keeper \(keeper) exited; see \(logPath(record.mountpoint))")
            }
            let left = deadline - ContinuousClock.now
            // Wakes on the next record written, or after a while to look at the keeper again.
            let wait = Int32(clamping: min(left.components.seconds * 1000 + 1, 1000))
            _ = try await BlockingThreads.run {
                var entry = pollfd(fd: events.fd, events: Int16(POLLIN), revents: 0)
                _ = poll(&entry, 1, wait)
                imgvol_drain(events.fd)
            }
        }
        throw MountServer.Failure("restarting the server of \(record.mountpoint): no new server served within \(limit); see \(logPath(record.mountpoint))")
    }
}
