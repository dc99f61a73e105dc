import FileIO
import ImageFS
import OCI
import Store

/// What a server taking a live mount over reads: the image it must serve (the same digest,
/// hence the same tree and inode numbers, whatever the tag now names) and the FUSE session's
/// state. Written by each server of the mount as the state changes; removed with the mount.
public struct MountSession: Codable, Sendable, Equatable {
    public var digest: Digest
    public var fuse: FuseSessionState

    public init(digest: Digest, fuse: FuseSessionState) {
        self.digest = digest
        self.fuse = fuse
    }
}

extension MountTable {
    public func sessionPath(_ mountpoint: String) -> String { store.layout.mountSession(Self.key(mountpoint)) }

    /// Not synced: a mount does not outlive a reboot, and a backing registration waits on it.
    public func writeSession(_ session: MountSession, for mountpoint: String) throws {
        try FileSystem.writeAtomically(JSONCoding.encode(session), to: sessionPath(mountpoint),
                                       tmpDir: store.mountsDir, mode: 0o600, durable: false)
    }

    /// Fails closed: a server cannot take a session over from state it cannot read.
    public func readSession(for mountpoint: String) throws -> MountSession {
        let path = sessionPath(mountpoint)
        let bytes: [UInt8]
        do { bytes = try FileSystem.readFile(path) } catch {
            throw MountServer.Failure("cannot take over the mount at \(mountpoint): its session file \(path) cannot be read (\(error))")
        }
        do { return try JSONCoding.decode(MountSession.self, from: bytes, what: path) } catch {
            throw MountServer.Failure("cannot take over the mount at \(mountpoint): its session file \(path) is damaged (\(error))")
        }
    }
}
